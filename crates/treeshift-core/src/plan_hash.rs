//! The plan hash: what an approval names, so that a copy can tell the plan
//! it is about to carry out is the one a person approved. Every store
//! computes it the same way, here, over the plan's items in any order.

use crate::plan::{Extras, Policy};

/// One item of a plan, as its hash sees it: what is done to which node,
/// and what the destination held there.
#[derive(Clone, Copy, Debug)]
pub struct PlanItem<'a> {
    /// The source node's id.
    pub node_id: i64,
    /// The action (`create`, `replace`, `skip`, ...).
    pub action: &'a str,
    /// The node's kind code.
    pub kind: u8,
    /// Its size.
    pub size: u64,
    /// Its mtime in nanoseconds, if known.
    pub mtime_ns: Option<i64>,
    /// Its path, relative to the root.
    pub path: &'a [u8],
    /// What the destination held at the path: its kind code,
    pub dst_kind: Option<u8>,
    /// its size,
    pub dst_size: Option<u64>,
    /// and its mtime in nanoseconds.
    pub dst_mtime_ns: Option<i64>,
    /// What the copy sets besides the data: mode, owner, group, and the
    /// digest of the extended attributes.
    pub meta: [Option<i64>; 4],
    /// The path the item is a hard link to, if the copy links it.
    pub link_to: Option<&'a [u8]>,
}

/// An order-independent hash of a plan: the wrapping sum of one BLAKE3
/// hash per item, then hashed with the policy, what happens to extras,
/// the filter rules and the item count. Computed here rather than with a
/// database's own hash function, so it stays the same across databases
/// and their versions.
#[derive(Clone, Debug, Default)]
pub struct PlanHash {
    sum: u128,
    count: u64,
}

impl PlanHash {
    /// Adds one item.
    pub fn add(&mut self, item: &PlanItem<'_>) {
        let mut h = blake3::Hasher::new();
        h.update(&item.node_id.to_le_bytes());
        h.update(item.action.as_bytes());
        h.update(&[item.kind]);
        h.update(&item.size.to_le_bytes());
        h.update(&optional(item.mtime_ns));
        h.update(&(item.path.len() as u64).to_le_bytes());
        h.update(item.path);
        h.update(&optional(item.dst_kind.map(i64::from)));
        h.update(&optional(item.dst_size.map(|v| v as i64)));
        h.update(&optional(item.dst_mtime_ns));
        // Absent from plans made before metadata and links were recorded,
        // whose hashes stay as they were.
        if item.meta.iter().any(Option::is_some) || item.link_to.is_some() {
            for v in item.meta {
                h.update(&optional(v));
            }
            let link_to = item.link_to.unwrap_or_default();
            h.update(&(link_to.len() as u64).to_le_bytes());
            h.update(link_to);
        }
        let digest = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest.as_bytes()[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
        self.count += 1;
    }

    /// The hash, as 32 hex digits. `filter` is the filter rules discovery
    /// ran with, as recorded (they decided what the plan leaves out).
    pub fn finish(&self, policy: Policy, extras: Extras, filter: &str) -> String {
        let mut h = blake3::Hasher::new();
        h.update(policy.as_str().as_bytes());
        h.update(b"\0extras=");
        h.update(extras.as_str().as_bytes());
        h.update(&(filter.len() as u64).to_le_bytes());
        h.update(filter.as_bytes());
        h.update(&self.count.to_le_bytes());
        h.update(&self.sum.to_le_bytes());
        h.finalize().to_hex()[..32].to_string()
    }
}

/// A value that may be absent, in 9 bytes: absent is all ones; present is
/// a zero byte and the value.
fn optional(v: Option<i64>) -> [u8; 9] {
    v.map_or([0xff; 9], |v| {
        let mut b = [0u8; 9];
        b[1..].copy_from_slice(&v.to_le_bytes());
        b
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(node_id: i64, path: &[u8]) -> PlanItem<'_> {
        PlanItem {
            node_id,
            action: "create",
            kind: 1,
            size: 3,
            mtime_ns: Some(1_600_000_000_000_000_000),
            path,
            dst_kind: None,
            dst_size: None,
            dst_mtime_ns: None,
            meta: [None; 4],
            link_to: None,
        }
    }

    /// Approvals recorded in state files name hashes made this way: a
    /// change here would refuse every one of them as a changed plan. (The
    /// same plans hashed by the store before this code moved here, on a
    /// 1M-node state and on one with modes and a hard link, gave the same
    /// hashes.)
    #[test]
    fn the_hash_of_a_known_plan_stays_what_it_was() {
        let mut h = PlanHash::default();
        h.add(&item(1, b"a"));
        h.add(&PlanItem {
            meta: [Some(0o100600), Some(0), Some(0), None],
            link_to: Some(b"a"),
            dst_kind: Some(1),
            dst_size: Some(9),
            dst_mtime_ns: Some(-1),
            ..item(2, b"d/\xff")
        });
        assert_eq!(
            h.finish(Policy::Overwrite, Extras::Leave, "{\"excludes\":[]}"),
            "59df7dddb0f5aeebc35db434ef6dbc16"
        );
    }

    #[test]
    fn the_order_of_items_does_not_matter_and_every_field_does() {
        let hash = |items: &[PlanItem<'_>]| {
            let mut h = PlanHash::default();
            items.iter().for_each(|i| h.add(i));
            h.finish(Policy::Skip, Extras::Leave, "{}")
        };
        let (a, b) = (item(1, b"a"), item(2, b"b"));
        assert_eq!(hash(&[a, b]), hash(&[b, a]));
        let base = hash(&[a, b]);
        let changed = [
            PlanItem {
                action: "skip",
                ..a
            },
            PlanItem { size: 4, ..a },
            PlanItem {
                mtime_ns: None,
                ..a
            },
            PlanItem { path: b"c", ..a },
            PlanItem {
                dst_kind: Some(1),
                ..a
            },
            PlanItem {
                meta: [Some(0o644), None, None, None],
                ..a
            },
            PlanItem {
                link_to: Some(b"b"),
                ..a
            },
        ];
        for other in changed {
            assert_ne!(hash(&[other, b]), base, "{other:?}");
        }
        assert_ne!(hash(&[a]), base);
        let mut h = PlanHash::default();
        h.add(&a);
        h.add(&b);
        assert_ne!(h.finish(Policy::Overwrite, Extras::Leave, "{}"), base);
        assert_ne!(h.finish(Policy::Skip, Extras::Quarantine, "{}"), base);
        assert_ne!(h.finish(Policy::Skip, Extras::Leave, "{\"x\":1}"), base);
    }
}
