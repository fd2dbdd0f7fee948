//! How a source node compares with the destination node of the same
//! path, as a function: the rule a store applies where it compares one
//! pair at a time (the PostgreSQL store compares a folder's children when
//! the destination folder's listing completes). The DuckDB store applies
//! the same rule in set-based SQL; the end-to-end tests run one discovery
//! on both stores and compare every node's status and reason, so the two
//! cannot drift apart unnoticed.
//!
//! This is the first pass's rule: the destination compared with the
//! source alone. What later passes add (a destination still equal to the
//! previous pass's source is `outdated`; an object compared with the
//! record of what treeshift wrote) is the DuckDB store's alone so far.

use crate::{Kind, Meta, Status, mtime_secs};

/// What discovery recorded of one node, as the comparison reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// What the node is.
    pub kind: Kind,
    /// Its size in bytes (files; 0 otherwise).
    pub size: u64,
    /// Its mtime, if the side keeps one (an object store's destination
    /// listing gives the time of the upload, which is not recorded).
    pub mtime_ns: Option<i64>,
    /// Its metadata, as the migration keeps it.
    pub meta: Meta,
}

/// The status of the source node `src` against the destination node
/// `dst` of the same path (both present), with its reason. Data first
/// (kind, then size and mtime to the second, for all but folders), then
/// metadata (mode, owners, the digest of the kept extended attributes,
/// and a folder's mtime), each compared only where both sides recorded
/// it. A reason that starts with `metadata:` says the data is in step.
pub fn compare_pair(src: &NodeFacts, dst: &NodeFacts) -> (Status, Option<String>) {
    if src.kind != dst.kind {
        let reason = format!("{} on src, {} on dst", src.kind.as_str(), dst.kind.as_str());
        return (Status::Conflict, Some(reason));
    }
    let secs = |ns: Option<i64>| ns.map(mtime_secs);
    let shown = |s: Option<i64>| s.map_or_else(|| "?".to_string(), |s| s.to_string());
    if src.kind != Kind::Folder {
        if src.size != dst.size {
            let reason = format!("size {} on src, {} on dst", src.size, dst.size);
            return (Status::Differs, Some(reason));
        }
        if dst.mtime_ns.is_some() && secs(src.mtime_ns) != secs(dst.mtime_ns) {
            let reason = format!(
                "mtime {} on src, {} on dst",
                shown(secs(src.mtime_ns)),
                shown(secs(dst.mtime_ns))
            );
            return (Status::Differs, Some(reason));
        }
    }
    let differ = |a: Option<u32>, b: Option<u32>| matches!((a, b), (Some(a), Some(b)) if a != b);
    let (s, d) = (&src.meta, &dst.meta);
    let mut parts = Vec::new();
    if differ(s.mode, d.mode) {
        parts.push(format!(
            "mode {} on src, {} on dst",
            mode_text(s.mode),
            mode_text(d.mode)
        ));
    }
    if differ(s.uid, d.uid) || differ(s.gid, d.gid) {
        parts.push(format!(
            "owner {} on src, {} on dst",
            owner_text(s),
            owner_text(d)
        ));
    }
    if matches!((s.xattrs, d.xattrs), (Some(a), Some(b)) if a != b) {
        parts.push("extended attributes or ACLs".to_string());
    }
    if src.kind == Kind::Folder
        && let (Some(a), Some(b)) = (secs(src.mtime_ns), secs(dst.mtime_ns))
        && a != b
    {
        parts.push(format!("mtime {a} on src, {b} on dst"));
    }
    if parts.is_empty() {
        return (Status::Same, None);
    }
    (
        Status::Differs,
        Some(format!("metadata: {}", parts.join("; "))),
    )
}

/// Permission bits as four octal digits (`0755`).
fn mode_text(mode: Option<u32>) -> String {
    mode.map_or_else(String::new, |m| format!("{:04o}", m & 0o7777))
}

/// `uid:gid`, with `?` for what was not recorded.
fn owner_text(meta: &Meta) -> String {
    let id = |v: Option<u32>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    format!("{}:{}", id(meta.uid), id(meta.gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64, mtime_ns: Option<i64>, meta: Meta) -> NodeFacts {
        NodeFacts {
            kind: Kind::File,
            size,
            mtime_ns,
            meta,
        }
    }

    #[test]
    fn data_first_then_metadata_each_only_where_both_sides_recorded_it() {
        let plain = Meta::default();
        let s = file(10, Some(5_400_000_000), plain);
        assert_eq!(compare_pair(&s, &s), (Status::Same, None));
        // The same second, another nanosecond: the same.
        assert_eq!(
            compare_pair(&s, &file(10, Some(5_999_999_999), plain)).0,
            Status::Same
        );
        // A destination that keeps no mtime compares by size.
        assert_eq!(compare_pair(&s, &file(10, None, plain)).0, Status::Same);
        assert_eq!(
            compare_pair(&s, &file(11, Some(1), plain)),
            (
                Status::Differs,
                Some("size 10 on src, 11 on dst".to_string())
            )
        );
        // Before 1970 the second is the floor, as the SQL rule's.
        assert_eq!(
            compare_pair(&file(10, None, plain), &file(10, Some(-1), plain)),
            (Status::Differs, Some("mtime ? on src, -1 on dst".into()))
        );
        let owned = |mode, uid, gid| Meta {
            mode: Some(mode),
            uid,
            gid,
            xattrs: Some(7),
        };
        let a = file(10, Some(0), owned(0o100644, Some(1), Some(2)));
        let b = file(10, Some(0), owned(0o100600, None, Some(3)));
        assert_eq!(
            compare_pair(&a, &b),
            (
                Status::Differs,
                Some(
                    "metadata: mode 0644 on src, 0600 on dst; owner 1:2 on src, ?:3 on dst".into()
                )
            )
        );
        let folder = |mtime| NodeFacts {
            kind: Kind::Folder,
            size: 0,
            mtime_ns: Some(mtime),
            meta: plain,
        };
        assert_eq!(
            compare_pair(&folder(1_000_000_000), &folder(3_000_000_000)),
            (
                Status::Differs,
                Some("metadata: mtime 1 on src, 3 on dst".into())
            )
        );
        assert_eq!(
            compare_pair(&folder(0), &a),
            (Status::Conflict, Some("folder on src, file on dst".into()))
        );
    }
}
