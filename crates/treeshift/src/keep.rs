//! What a migration keeps, from the command line: `--owners`, `--xattrs`,
//! `--acls`, `--hard-links`, resolved into the settings the state file
//! records (an owner map's names become ids here, once).

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::Path;
use treeshift_core::{Keep, OwnerMap, Owners};

/// Resolves the flags. Without `--owners`, owners are kept when this
/// process may set them (root, or CAP_CHOWN), as `cp -a` does, and
/// ignored otherwise.
pub fn resolve(owners: Option<&str>, xattrs: bool, acls: bool, hard_links: bool) -> Result<Keep> {
    let owners = match owners {
        None if may_set_owners() => Owners::Keep,
        None | Some("ignore") => Owners::Ignore,
        Some("keep") if may_set_owners() => Owners::Keep,
        Some("keep") => bail!(
            "--owners keep needs root or CAP_CHOWN, which this process has not; use --owners ignore"
        ),
        Some(other) => match other.strip_prefix("map:") {
            Some(file) => Owners::Map(read_map(Path::new(file))?),
            None => bail!("--owners takes keep, ignore or map:FILE, not '{other}'"),
        },
    };
    Ok(Keep {
        modes: true,
        owners,
        xattrs,
        acls,
        hard_links,
    })
}

/// Returns true if and only if this process may give files to other
/// users: CAP_CHOWN (bit 0) in its effective capabilities, which root has
/// unless they were dropped.
fn may_set_owners() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & 1 == 1)
}

/// Reads an owner map: one mapping a line, `user SRC DST` or
/// `group SRC DST`, each side a name or a numeric id; `#` starts a comment.
/// Names are looked up in this machine's /etc/passwd and /etc/group.
fn read_map(file: &Path) -> Result<OwnerMap> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("--owners: cannot read {}", file.display()))?;
    let users = ids("/etc/passwd");
    let groups = ids("/etc/group");
    let mut map = OwnerMap::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = || format!("{}:{}", file.display(), n + 1);
        let [kind, from, to] = words[..] else {
            bail!(
                "{}: expected 'user SRC DST' or 'group SRC DST', got '{line}'",
                at()
            );
        };
        let (names, into) = match kind {
            "user" => (&users, &mut map.users),
            "group" => (&groups, &mut map.groups),
            _ => bail!("{}: '{kind}' is neither user nor group", at()),
        };
        let id = |word: &str| -> Result<u32> {
            word.parse()
                .ok()
                .or_else(|| names.get(word).copied())
                .with_context(|| format!("{}: no {kind} '{word}' on this machine", at()))
        };
        into.insert(id(from)?, id(to)?);
    }
    Ok(map)
}

/// Names and ids from a passwd- or group-style file (name:x:id:...).
fn ids(file: &str) -> BTreeMap<String, u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut fields = l.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse().ok()?;
            Some((name.to_string(), id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_maps_take_names_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("map");
        std::fs::write(
            &file,
            "# a map\nuser root 1000\nuser 5 6  # numbers\ngroup root 100\n",
        )
        .unwrap();
        let map = read_map(&file).unwrap();
        assert_eq!(map.users, [(0, 1000), (5, 6)].into());
        assert_eq!(map.groups, [(0, 100)].into());
        std::fs::write(&file, "user nobody-here-at-all 1\n").unwrap();
        let e = read_map(&file).unwrap_err().to_string();
        assert!(e.contains(":1: no user 'nobody-here-at-all'"), "{e}");
        std::fs::write(&file, "owner a b\n").unwrap();
        assert!(read_map(&file).is_err());
    }
}
