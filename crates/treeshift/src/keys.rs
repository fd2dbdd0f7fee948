//! Where the CLI finds the key that opens a migration's sealed secrets:
//! `--passphrase-file`, a passphrase typed at the terminal, or
//! `TREESHIFT_MASTER_KEY`; and, for `rekey`, the new one.

use crate::cli::{KeyArgs, RekeyArgs};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;
use treeshift_core::Secret;
use treeshift_lifecycle::{Keys, LifecycleError};
use treeshift_vault::{KeyKind, KeySource};

/// The environment variable of the master key.
pub const MASTER_KEY_ENV: &str = "TREESHIFT_MASTER_KEY";
/// The environment variable of the new master key, for `rekey`.
pub const NEW_MASTER_KEY_ENV: &str = "TREESHIFT_NEW_MASTER_KEY";

type Result<T> = std::result::Result<T, LifecycleError>;

fn input(why: impl std::fmt::Display) -> LifecycleError {
    LifecycleError::Input(why.to_string())
}

/// The keys the command line gives; `interactive` lets it ask on the
/// terminal (a server never does: a request would wait on it).
pub struct CliKeys {
    pub args: KeyArgs,
    pub interactive: bool,
}

impl Keys for CliKeys {
    /// A passphrase is asked unasked when the secrets are sealed under
    /// one and a terminal is there.
    fn key(&self, sealed: Option<KeyKind>) -> Result<Option<KeySource>> {
        if let Some(file) = &self.args.passphrase_file {
            return passphrase_from_file(file).map(Some);
        }
        let terminal =
            self.interactive && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
        if self.args.ask_passphrase || (sealed == Some(KeyKind::Passphrase) && terminal) {
            return ask_passphrase("passphrase", sealed.is_none()).map(Some);
        }
        master_key_from_env(MASTER_KEY_ENV)
    }

    fn how_to_give(&self, kind: KeyKind) -> String {
        match kind {
            KeyKind::MasterKey => {
                format!("set {MASTER_KEY_ENV} (or give --passphrase-file FILE)")
            }
            KeyKind::Passphrase => "give --passphrase-file FILE or --ask-passphrase".to_string(),
        }
    }
}

fn master_key_from_env(name: &str) -> Result<Option<KeySource>> {
    match std::env::var(name) {
        Ok(text) if !text.is_empty() => Ok(Some(KeySource::master_key(&text, name)?)),
        _ => Ok(None),
    }
}

/// The first line of a file, as a passphrase.
fn passphrase_from_file(path: &Path) -> Result<KeySource> {
    let unreadable = |e: std::io::Error| {
        input(format!(
            "cannot read the passphrase file {}: {e}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::BufReader::new(file)
        .read_line(&mut line)
        .map_err(unreadable)?;
    let line = Secret::new(line.trim_end_matches(['\n', '\r']).to_string());
    Ok(KeySource::passphrase(line)?)
}

/// A line typed on the terminal without echo.
pub fn ask_hidden(prompt: &str) -> Result<Secret> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| input(format!("no terminal to ask on ({e})")))?;
    let failed = |what: &str, e: rustix::io::Errno| input(format!("{what}: {e}"));
    let before = tcgetattr(&tty).map_err(|e| failed("read the terminal's settings", e))?;
    let mut quiet = before.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&tty, OptionalActions::Flush, &quiet)
        .map_err(|e| failed("turn the terminal's echo off", e))?;
    let _ = write!(tty, "{prompt}");
    let _ = tty.flush();
    let mut line = zeroize::Zeroizing::new(String::new());
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, OptionalActions::Flush, &before);
    let _ = writeln!(tty);
    read.map_err(|e| input(format!("read from the terminal: {e}")))?;
    Ok(Secret::new(line.trim_end_matches(['\n', '\r']).to_string()))
}

/// A passphrase asked on the terminal; twice when it is a new one.
fn ask_passphrase(what: &str, confirm: bool) -> Result<KeySource> {
    let first = ask_hidden(&format!("{what}: "))?;
    if confirm && ask_hidden(&format!("{what} (again): "))? != first {
        return Err(input("the two passphrases differ"));
    }
    Ok(KeySource::passphrase(first)?)
}

/// The new key `rekey` wraps the data key under.
pub fn new_key(args: &RekeyArgs) -> Result<KeySource> {
    if let Some(file) = &args.new_master_key_file {
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(file).map_err(|e| {
            input(format!(
                "cannot read the new master key file {}: {e}",
                file.display()
            ))
        })?);
        return Ok(KeySource::master_key(&text, &file.display().to_string())?);
    }
    if let Some(file) = &args.new_passphrase_file {
        return passphrase_from_file(file);
    }
    if args.ask_new_passphrase {
        return ask_passphrase("new passphrase", true);
    }
    master_key_from_env(NEW_MASTER_KEY_ENV)?.ok_or_else(|| {
        input(format!(
            "no new key: set {NEW_MASTER_KEY_ENV}, or give --new-master-key-file, --new-passphrase-file or --ask-new-passphrase"
        ))
    })
}

/// A secret's value from stdin: asked without echo on a terminal, else
/// all of stdin without its last line ending.
pub fn read_value(name: &str) -> Result<Secret> {
    if std::io::stdin().is_terminal() {
        return ask_hidden(&format!("{name}: "));
    }
    let mut value = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut value)
        .map_err(|e| input(format!("read {name} from stdin: {e}")))?;
    let trimmed = value.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(input(format!("no value for {name} on stdin")));
    }
    Ok(Secret::new(trimmed.to_string()))
}
