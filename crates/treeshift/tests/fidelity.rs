//! The destination equals the source in every detail a file server keeps,
//! checked by a tool nobody here wrote: `rsync -aHAX -c -n -i --delete`
//! lists every difference in content, mode, owner, group, mtime, ACLs,
//! extended attributes and hard links, and must list nothing. Each test
//! runs with the state in a DuckDB file, then in PostgreSQL.

mod util;

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, lchown, symlink};
use std::path::Path;
use std::process::Command;
use util::{rsync_differences, run, s, set_mtime, status_json, tool};

/// A tree with what a file server holds: private, shared, sticky and
/// setgid folders, setuid and private files owned by others, symlinks
/// owned by others, extended attributes, access and default ACLs.
fn server_tree(src: &Path) -> Option<()> {
    let folder = |rel: &str, mode: u32, owner: (u32, u32)| {
        let p = src.join(rel);
        fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(owner.0), Some(owner.1)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    let file = |rel: &str, data: &[u8], mode: u32, owner: (u32, u32)| {
        let p = src.join(rel);
        fs::write(&p, data).unwrap();
        std::os::unix::fs::chown(&p, Some(owner.0), Some(owner.1)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        set_mtime(&p, 1_700_000_000);
    };
    fs::create_dir_all(src).unwrap();
    folder("private", 0o700, (1001, 1001));
    folder("team", 0o750, (1001, 2000));
    folder("tmp", 0o1777, (0, 0));
    folder("shared", 0o2775, (0, 2000));
    folder("shared/acl", 0o770, (1002, 2000));
    file("private/diary", b"dear diary", 0o600, (1001, 1001));
    file("team/plan", b"the plan", 0o640, (1001, 2000));
    file("tmp/scratch", b"scratch", 0o666, (1003, 1003));
    file("shared/tool", b"#!/bin/sh\necho hi\n", 0o4755, (0, 0));
    file("shared/group-tool", b"#!/bin/sh\n", 0o2755, (1002, 2000));
    file("shared/acl/doc", b"acl'd", 0o660, (1002, 2000));
    file("plain", b"plain", 0o644, (0, 0));
    symlink("plain", src.join("link-to-plain")).unwrap();
    lchown(src.join("link-to-plain"), Some(1004), Some(1005)).unwrap();
    symlink("../private/diary", src.join("team/dangling-ish")).unwrap();
    lchown(src.join("team/dangling-ish"), Some(1001), Some(2000)).unwrap();
    // One file with three names, across folders; a pair in one folder.
    fs::hard_link(src.join("team/plan"), src.join("shared/plan-link")).unwrap();
    fs::hard_link(src.join("team/plan"), src.join("private/plan-also")).unwrap();
    fs::hard_link(src.join("plain"), src.join("plain-twin")).unwrap();
    // Names past ASCII lead two pairs: one UTF-8, one not.
    file("façade", b"front", 0o644, (0, 0));
    fs::hard_link(src.join("façade"), src.join("shared/façade-link")).unwrap();
    let raw = src.join(std::ffi::OsStr::from_bytes(b"private/raw-\xff"));
    fs::write(&raw, b"raw").unwrap();
    set_mtime(&raw, 1_700_000_000);
    fs::hard_link(&raw, src.join("shared/raw-link")).unwrap();
    // 64 MiB with 8 KiB of data in two places: holes at the start, the
    // middle and the end.
    let sparse = fs::File::create(src.join("sparse.img")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &[7u8; 4096], 1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &[9u8; 4096], 40 << 20).unwrap();
    drop(sparse);
    set_mtime(&src.join("sparse.img"), 1_700_000_000);
    let p = |rel: &str| s(&src.join(rel)).to_string();
    tool(
        "setfattr",
        &["-n", "user.origin", "-v", "scanner-7", &p("team/plan")],
    )?;
    tool("setfattr", &["-n", "user.empty", &p("plain")])?;
    tool("setfattr", &["-n", "user.folder", "-v", "yes", &p("team")])?;
    tool(
        "setfacl",
        &["-m", "u:1234:r--,g:3000:rw-", &p("shared/acl/doc")],
    )?;
    tool("setfacl", &["-d", "-m", "u:1234:rwx", &p("shared/acl")])?;
    tool("setfacl", &["-m", "u:1234:r-x", &p("shared/acl")])?;
    for folder in ["private", "team", "tmp", "shared/acl", "shared", ""] {
        set_mtime(&src.join(folder), 1_650_000_000);
    }
    Some(())
}

fn migrate(src: &Path, dst: &Path, state: &Path) -> serde_json::Value {
    let (code, out, err) = run(&[
        "migrate",
        s(src),
        s(dst),
        "--state",
        s(state),
        "--yes",
        "--json",
    ]);
    assert_eq!(code, 0, "{out} {err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn rsync_finds_nothing_to_change_after_a_migrate_or_a_delta_pass() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst, state) = (
            dir.path().join("src"),
            dir.path().join("dst"),
            store.state(dir.path(), "s"),
        );
        if server_tree(&src).is_none() {
            return;
        }
        migrate(&src, &dst, &state);
        let Some(left) = rsync_differences(&src, &dst) else {
            return;
        };
        assert!(
            left.is_empty(),
            "after the migrate, rsync would change: {left:#?}"
        );
        // The holes are kept: the copy takes the disk its source takes.
        use std::os::unix::fs::MetadataExt;
        let blocks = |p: &Path| fs::metadata(p).unwrap().blocks();
        let (a, b) = (
            blocks(&src.join("sparse.img")),
            blocks(&dst.join("sparse.img")),
        );
        assert!(
            b <= a + 3 * 8,
            "{b} blocks on the destination for {a} on the source"
        );
        // Each other name of a file says which name it was linked to, as
        // the review writes every path.
        let (code, out, err) = run(&[
            "review",
            "--state",
            s(&state),
            "--status",
            "copied",
            "--format",
            "json",
        ]);
        assert_eq!(code, 0, "{err}");
        let mut links: Vec<(String, String)> = out
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|row| {
                row["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("hard link"))
            })
            .map(|row| {
                (
                    row["path"].as_str().unwrap().into(),
                    row["reason"].as_str().unwrap().into(),
                )
            })
            .collect();
        links.sort();
        let expected = [
            ("plain-twin", "hard link of plain"),
            ("shared/façade-link", "hard link of façade"),
            ("shared/plan-link", "hard link of private/plan-also"),
            ("shared/raw-link", "hard link of private/raw-\\xff"),
            ("team/plan", "hard link of private/plan-also"),
        ];
        assert_eq!(
            links,
            expected.map(|(p, r)| (p.to_string(), r.to_string())),
            "{out}"
        );

        // Pass 2, after the source changed: content, a mode, an owner, a
        // folder's mode and owner, an attribute, an ACL. And someone changed
        // one file on the destination: that one is not the migration's.
        let p = |rel: &str| src.join(rel);
        fs::write(p("team/plan"), b"the new plan, longer").unwrap();
        set_mtime(&p("team/plan"), 1_700_000_500);
        fs::set_permissions(p("plain"), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(p("tmp/scratch"), Some(1010), Some(1010)).unwrap();
        std::os::unix::fs::chown(p("private"), Some(1011), None).unwrap();
        fs::set_permissions(p("private"), fs::Permissions::from_mode(0o710)).unwrap();
        tool(
            "setfattr",
            &["-n", "user.origin", "-v", "scanner-8", s(&p("team/plan"))],
        )
        .unwrap();
        tool("setfacl", &["-m", "u:1235:r--", s(&p("shared/acl/doc"))]).unwrap();
        fs::write(p("private/diary"), b"dear diary, again").unwrap();
        fs::write(dst.join("private/diary"), b"someone else's edit").unwrap();
        for folder in ["private", "team", "tmp", "shared/acl", ""] {
            set_mtime(&src.join(folder), 1_660_000_000);
        }
        let (code, out, err) = run(&["discover", s(&src), s(&dst), "--state", s(&state), "--json"]);
        assert_eq!(code, 0, "{err}");
        let found: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(found["pass"], 2, "{found}");
        // The migration's own: one file's data (under its three names), the
        // metadata of four items (plain and its twin, scratch, doc), and the mtimes
        // of the folders whose mtime changed (private with its mode and owner,
        // team, tmp, shared/acl); the diary someone else edited is left alone,
        // and said so.
        assert_eq!(found["to_copy"]["files"], 3, "{found}");
        assert_eq!(found["to_copy"]["metadata"], 4 + 4, "{found}");
        assert_eq!(found["outdated"], 3 + 4 + 4, "{found}");
        assert_eq!(found["left_alone"]["items"], 1, "{found}");
        assert_eq!(found["differs"], 1, "{found}");
        let (code, _, err) = run(&["approve", "--state", s(&state)]);
        assert_eq!(code, 0, "{err}");
        let (code, out, err) = run(&["copy", "--state", s(&state), "--json"]);
        assert_eq!(code, 0, "{out} {err}");
        let left = rsync_differences(&src, &dst).unwrap();
        assert!(
            left.len() == 1 && left[0].ends_with(" private/diary"),
            "only the file someone else edited is left: {left:#?}"
        );
        let (code, out, err) = run(&["verify", "--state", s(&state), "--checksum", "--json"]);
        assert_eq!(code, 0, "{out} {err}");
        assert_eq!(status_json(&state)["verify"]["mismatch"], 0);
    });
}

/// A file system mounted for a test, unmounted on drop.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_destination_without_extended_attributes_gets_everything_else_with_a_note_per_item() {
    util::on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst, state) = (
            dir.path().join("src"),
            dir.path().join("dst"),
            store.state(dir.path(), "s"),
        );
        fs::create_dir_all(src.join("acl")).unwrap();
        fs::write(src.join("tagged"), b"tagged").unwrap();
        fs::write(src.join("plain"), b"plain").unwrap();
        fs::write(src.join("acl/doc"), b"doc").unwrap();
        if tool(
            "setfattr",
            &["-n", "user.tag", "-v", "x", s(&src.join("tagged"))],
        )
        .is_none()
            || tool("setfacl", &["-m", "u:1234:r--", s(&src.join("acl/doc"))]).is_none()
        {
            return;
        }
        // ramfs holds neither extended attributes nor ACLs.
        fs::create_dir_all(&dst).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "ramfs", "ramfs", s(&dst)])
            .status()
            .is_ok_and(|st| st.success());
        if !mounted {
            util::missing_prerequisite("a ramfs mount");
            return;
        }
        let _mount = Mounted(dst.clone());
        let (code, out, err) = run(&[
            "migrate",
            s(&src),
            s(&dst),
            "--state",
            s(&state),
            "--yes",
            "--json",
        ]);
        assert_eq!(code, 0, "the data is all there, and verified: {out} {err}");
        let (_, copied, _) = run(&[
            "review",
            "--state",
            s(&state),
            "--status",
            "copied",
            "--format",
            "csv",
        ]);
        let noted: Vec<&str> = copied
            .lines()
            .filter(|l| l.contains("copied without its extended attributes"))
            .collect();
        assert_eq!(
            noted.len(),
            2,
            "tagged and acl/doc, each with a note: {copied}"
        );
        assert!(noted.iter().any(|l| l.contains(",tagged,")), "{noted:?}");
        assert!(
            !copied
                .lines()
                .any(|l| l.contains(",plain,") && l.contains("without"))
        );
        // All but the attributes: rsync without -A and -X finds nothing.
        let left = tool(
            "rsync",
            &[
                "-aH",
                "-c",
                "-n",
                "-i",
                &format!("{}/", s(&src)),
                &format!("{}/", s(&dst)),
            ],
        )
        .unwrap();
        assert!(left.trim().is_empty(), "{left}");
    });
}
