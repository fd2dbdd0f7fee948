//! How a source node compares with the destination node of the same
//! path, as a function: the rule a store applies where it compares one
//! pair at a time (the PostgreSQL store compares a folder's children when
//! the destination folder's listing completes). The DuckDB store applies
//! the same rule in set-based SQL; the end-to-end tests run the same
//! passes on both stores and compare every node's status and reason, so
//! the two cannot drift apart unnoticed.
//!
//! From the second pass on, a pair has a history ([`PairHistory`]): a
//! destination still equal to the previous pass's source is `outdated`
//! rather than `differs`, and an object is compared with the record of
//! what treeshift wrote there. What changed on the source between passes
//! is [`source_change`].

use crate::{Kind, Md5, Meta, Status, mtime_secs};

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
    /// The MD5 of its content, where its side's listing gave one.
    pub md5: Option<Md5>,
}

/// What treeshift wrote at a path, as the copy recorded it: the
/// source's size and mtime then, the etag the store returned, and the
/// object's own mtime where the store keeps one apart from its listing's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WrittenFacts<'a> {
    /// The source's size when written.
    pub size: u64,
    /// The source's mtime when written.
    pub mtime_ns: Option<i64>,
    /// The etag the store returned.
    pub etag: Option<&'a str>,
    /// The mtime the destination listed for it, where it keeps its own.
    pub own_mtime_ns: Option<i64>,
}

/// What a pair's comparison knows beyond the two nodes: the destination's
/// etag, the previous pass's source node of the same path, and the latest
/// record of what treeshift wrote there. Empty in a first pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct PairHistory<'a> {
    /// The etag the destination's listing gave.
    pub dst_etag: Option<&'a str>,
    /// The previous pass's source node of this path.
    pub previous: Option<NodeFacts>,
    /// What treeshift wrote at this path.
    pub written: Option<WrittenFacts<'a>>,
}

/// The status of the source node `src` against the destination node
/// `dst` of the same path (both present), with its reason. Data first
/// (kind, then size and mtime to the second, for all but folders), then
/// metadata (mode, owners, the digest of the kept extended attributes,
/// and a folder's mtime), each compared only where both sides recorded
/// it. A reason that starts with `metadata:` says the data is in step.
pub fn compare_pair(src: &NodeFacts, dst: &NodeFacts) -> (Status, Option<String>) {
    compare_in_pass(src, dst, &PairHistory::default())
}

/// [`compare_pair`] in a pass with a history. A difference is `outdated`
/// rather than `differs` where the destination is as treeshift left it:
/// equal to the previous pass's source node, or the very object
/// treeshift wrote there (its etag, or its size and own mtime).
///
/// A destination that keeps no mtime (an object store's listing gives the
/// upload's time, which is not recorded) compares a file by size, and by
/// the record of what treeshift wrote: an object written from another
/// version of the source, or changed since (another etag), differs. A
/// source file still the version written is expected on the destination
/// with the mtime the destination gave it then, where it keeps its own.
/// A file treeshift did not write compares by content too where both
/// listings gave its MD5 (object stores to object stores).
pub fn compare_in_pass(
    src: &NodeFacts,
    dst: &NodeFacts,
    history: &PairHistory<'_>,
) -> (Status, Option<String>) {
    if src.kind != dst.kind {
        let reason = format!("{} on src, {} on dst", src.kind.as_str(), dst.kind.as_str());
        return (Status::Conflict, Some(reason));
    }
    let reason = data_difference(src, dst, history).or_else(|| meta_difference(src, dst));
    match reason {
        None => (Status::Same, None),
        Some(reason) if owned(dst, history) => (Status::Outdated, Some(reason)),
        Some(reason) => (Status::Differs, Some(reason)),
    }
}

/// Why the data of two nodes of one kind differs, if it does.
fn data_difference(src: &NodeFacts, dst: &NodeFacts, history: &PairHistory<'_>) -> Option<String> {
    if src.kind == Kind::Folder {
        return None;
    }
    if src.size != dst.size {
        return Some(format!("size {} on src, {} on dst", src.size, dst.size));
    }
    let secs = |ns: Option<i64>| ns.map(mtime_secs);
    let shown = |s: Option<i64>| s.map_or_else(|| "?".to_string(), |s| s.to_string());
    let written = history.written.as_ref();
    // The source still the version written: its mtime on the destination
    // is the one the destination gave it then.
    let expected = written
        .filter(|w| w.size == src.size && secs(w.mtime_ns) == secs(src.mtime_ns))
        .and_then(|w| w.own_mtime_ns)
        .or(src.mtime_ns);
    if dst.mtime_ns.is_some() && secs(expected) != secs(dst.mtime_ns) {
        return Some(format!(
            "mtime {} on src, {} on dst",
            shown(secs(expected)),
            shown(secs(dst.mtime_ns))
        ));
    }
    let Some(w) = written else {
        return content_difference(src, dst);
    };
    if dst.mtime_ns.is_some() || src.kind != Kind::File {
        return None;
    }
    if w.etag != history.dst_etag {
        return Some(format!(
            "changed on the destination since treeshift wrote it (etag {})",
            history.dst_etag.unwrap_or("?")
        ));
    }
    if w.size != src.size || secs(w.mtime_ns) != secs(src.mtime_ns) {
        return Some(
            "the destination holds what treeshift wrote from an earlier version of the source"
                .to_string(),
        );
    }
    None
}

/// Why the content of a file treeshift did not write differs, where both
/// listings gave its MD5.
fn content_difference(src: &NodeFacts, dst: &NodeFacts) -> Option<String> {
    match (src.md5, dst.md5) {
        (Some(a), Some(b)) if a != b => Some(format!("content MD5 {a} on src, {b} on dst")),
        _ => None,
    }
}

/// Why the metadata of two nodes of one kind differs, if it does.
fn meta_difference(src: &NodeFacts, dst: &NodeFacts) -> Option<String> {
    let secs = |ns: Option<i64>| ns.map(mtime_secs);
    let mut parts = meta_parts(&src.meta, &dst.meta, ["on src", "on dst"]);
    if src.kind == Kind::Folder
        && let (Some(a), Some(b)) = (secs(src.mtime_ns), secs(dst.mtime_ns))
        && a != b
    {
        parts.push(format!("mtime {a} on src, {b} on dst"));
    }
    (!parts.is_empty()).then(|| format!("metadata: {}", parts.join("; ")))
}

/// What differs between the metadata `a` and `b` (mode, owners, the
/// digest of the extended attributes), where both recorded it, each said
/// as `mode 0644 {first}, 0600 {second}`.
fn meta_parts(a: &Meta, b: &Meta, [first, second]: [&str; 2]) -> Vec<String> {
    let mut parts = Vec::new();
    if differ(a.mode, b.mode) {
        parts.push(format!(
            "mode {} {first}, {} {second}",
            mode_text(a.mode),
            mode_text(b.mode)
        ));
    }
    if differ(a.uid, b.uid) || differ(a.gid, b.gid) {
        parts.push(format!(
            "owner {} {first}, {} {second}",
            owner_text(a),
            owner_text(b)
        ));
    }
    if differ(a.xattrs, b.xattrs) {
        parts.push("extended attributes or ACLs".to_string());
    }
    parts
}

/// Both recorded, and not equal.
fn differ<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}

/// Whether the destination node is as treeshift left it: equal to the
/// previous pass's source node (what was not recorded on one side is not
/// compared), or the object treeshift wrote there.
fn owned(dst: &NodeFacts, history: &PairHistory<'_>) -> bool {
    let secs = |ns: Option<i64>| ns.map(mtime_secs);
    let as_before = history.previous.is_some_and(|p| {
        p.kind == dst.kind
            && p.size == dst.size
            && secs(p.mtime_ns) == secs(dst.mtime_ns)
            && !differ(p.meta.mode, dst.meta.mode)
            && !differ(p.meta.uid, dst.meta.uid)
            && !differ(p.meta.gid, dst.meta.gid)
            && !differ(p.meta.xattrs, dst.meta.xattrs)
    });
    let written = history.written.is_some_and(|w| {
        (w.etag.is_some() && w.etag == history.dst_etag)
            || (w.size == dst.size
                && w.own_mtime_ns.is_some()
                && dst.mtime_ns.is_some()
                && secs(w.own_mtime_ns) == secs(dst.mtime_ns))
    });
    as_before || written
}

/// How the source node `now` changed since the previous pass, where
/// `before` is that pass's node of the same path (none: it is new): the
/// change (`new` or `modified`) and, for a modification, why. None if it
/// did not change. A folder's mtime is not compared: it changes whenever
/// its children do; a changed mode, owner or set of extended attributes
/// is a modification.
pub fn source_change(
    before: Option<&NodeFacts>,
    now: &NodeFacts,
) -> Option<(&'static str, Option<String>)> {
    let Some(before) = before else {
        return Some(("new", None));
    };
    let secs = |ns: Option<i64>| ns.map(mtime_secs);
    let shown = |s: Option<i64>| s.map_or_else(|| "?".to_string(), |s| s.to_string());
    let reason = if before.kind != now.kind {
        format!("{} before, {} now", before.kind.as_str(), now.kind.as_str())
    } else if now.kind != Kind::Folder && before.size != now.size {
        format!("size {} before, {} now", before.size, now.size)
    } else if now.kind != Kind::Folder && secs(before.mtime_ns) != secs(now.mtime_ns) {
        format!(
            "mtime {} before, {} now",
            shown(secs(before.mtime_ns)),
            shown(secs(now.mtime_ns))
        )
    } else {
        let parts = meta_parts(&before.meta, &now.meta, ["before", "now"]);
        if parts.is_empty() {
            return None;
        }
        format!("metadata: {}", parts.join("; "))
    };
    Some(("modified", Some(reason)))
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
            md5: None,
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
            md5: None,
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

    #[test]
    fn a_destination_as_treeshift_left_it_is_outdated_not_differing() {
        let plain = Meta::default();
        let src = file(20, Some(9_000_000_000), plain);
        let dst = file(10, Some(5_000_000_000), plain);
        let before = PairHistory {
            previous: Some(dst),
            ..PairHistory::default()
        };
        let outdated = compare_in_pass(&src, &dst, &before);
        assert_eq!(outdated.0, Status::Outdated);
        assert_eq!(outdated.1.as_deref(), Some("size 20 on src, 10 on dst"));
        // Changed on the destination since the previous pass: someone
        // else's change.
        let touched = file(10, Some(6_000_000_000), plain);
        assert_eq!(compare_in_pass(&src, &touched, &before).0, Status::Differs);
        // In step: the history does not matter.
        assert_eq!(compare_in_pass(&src, &src, &before).0, Status::Same);
    }

    #[test]
    fn an_object_treeshift_did_not_write_compares_by_content_where_both_listings_hash_it() {
        let plain = Meta::default();
        let hashed = |size, byte| NodeFacts {
            md5: Some(Md5([byte; 16])),
            ..file(size, None, plain)
        };
        assert_eq!(
            compare_pair(&hashed(4, 1), &hashed(4, 1)),
            (Status::Same, None)
        );
        assert_eq!(
            compare_pair(&hashed(4, 1), &hashed(4, 2)),
            (
                Status::Differs,
                Some(format!(
                    "content MD5 {} on src, {} on dst",
                    "01".repeat(16),
                    "02".repeat(16)
                ))
            )
        );
        // The size says it first; one side without a hash compares by size.
        assert_eq!(
            compare_pair(&hashed(4, 1), &hashed(5, 2)).1.as_deref(),
            Some("size 4 on src, 5 on dst")
        );
        assert_eq!(
            compare_pair(&hashed(4, 1), &file(4, None, plain)).0,
            Status::Same
        );
        // What treeshift wrote is told by its record, not by the hash (a
        // multipart upload's etag is no MD5).
        let written = PairHistory {
            dst_etag: Some("e1"),
            previous: None,
            written: Some(WrittenFacts {
                size: 4,
                mtime_ns: None,
                etag: Some("e1"),
                own_mtime_ns: None,
            }),
        };
        assert_eq!(
            compare_in_pass(&hashed(4, 1), &hashed(4, 2), &written),
            (Status::Same, None)
        );
    }

    #[test]
    fn md5_reads_and_shows_as_32_hex_digits() {
        let hex = "d41d8cd98f00b204e9800998ecf8427e";
        assert_eq!(Md5::from_hex(hex).unwrap().to_string(), hex);
        assert_eq!(Md5::from_hex(&hex.to_uppercase()).unwrap().to_string(), hex);
        for bad in [
            "",
            "d41d8cd98f00b204e9800998ecf8427",
            "+41d8cd98f00b204e9800998ecf8427e",
            "d41d8cd98f00b204e9800998ecf8427e-2",
        ] {
            assert_eq!(Md5::from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_object_compares_with_the_record_of_what_treeshift_wrote() {
        let plain = Meta::default();
        let src = file(10, Some(7_000_000_000), plain);
        let object = file(10, None, plain);
        let written = WrittenFacts {
            size: 10,
            mtime_ns: Some(7_000_000_000),
            etag: Some("e1"),
            own_mtime_ns: None,
        };
        let with = |etag, written| PairHistory {
            dst_etag: etag,
            previous: None,
            written: Some(written),
        };
        assert_eq!(
            compare_in_pass(&src, &object, &with(Some("e1"), written)),
            (Status::Same, None)
        );
        assert_eq!(
            compare_in_pass(&src, &object, &with(Some("e2"), written)),
            (
                Status::Differs,
                Some("changed on the destination since treeshift wrote it (etag e2)".into())
            )
        );
        // Written from an earlier version of the source of the same size.
        let earlier = WrittenFacts {
            mtime_ns: Some(1_000_000_000),
            ..written
        };
        assert_eq!(
            compare_in_pass(&src, &object, &with(Some("e1"), earlier)),
            (
                Status::Outdated,
                Some(
                    "the destination holds what treeshift wrote from an earlier version of the source"
                        .into()
                )
            )
        );
        // A destination that keeps its own mtime: the one it gave the
        // object is expected while the source is the version written.
        let kept = WrittenFacts {
            own_mtime_ns: Some(8_000_000_000),
            ..written
        };
        let listed = file(10, Some(8_000_000_000), plain);
        assert_eq!(
            compare_in_pass(&src, &listed, &with(None, kept)),
            (Status::Same, None)
        );
    }

    #[test]
    fn a_source_change_says_what_changed_first() {
        let plain = Meta::default();
        let before = file(10, Some(1_000_000_000), plain);
        assert_eq!(source_change(None, &before), Some(("new", None)));
        assert_eq!(source_change(Some(&before), &before), None);
        assert_eq!(
            source_change(Some(&before), &file(12, Some(2_000_000_000), plain)),
            Some(("modified", Some("size 10 before, 12 now".into())))
        );
        assert_eq!(
            source_change(Some(&before), &file(10, Some(2_000_000_000), plain)),
            Some(("modified", Some("mtime 1 before, 2 now".into())))
        );
        let moded = Meta {
            mode: Some(0o100600),
            ..plain
        };
        let was = Meta {
            mode: Some(0o100644),
            ..plain
        };
        assert_eq!(
            source_change(Some(&file(10, Some(0), was)), &file(10, Some(0), moded)),
            Some((
                "modified",
                Some("metadata: mode 0644 before, 0600 now".into())
            ))
        );
        // A folder's mtime follows its children: not a change of its own.
        let folder = |mtime| NodeFacts {
            kind: Kind::Folder,
            size: 0,
            mtime_ns: Some(mtime),
            meta: plain,
            md5: None,
        };
        assert_eq!(
            source_change(Some(&folder(0)), &folder(5_000_000_000)),
            None
        );
        assert_eq!(
            source_change(Some(&folder(0)), &before),
            Some(("modified", Some("folder before, file now".into())))
        );
    }
}
