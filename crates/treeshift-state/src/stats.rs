//! Statistics per depth, as every store keeps them (recomputed from the
//! events at each seal, replacing the old), and the discovery summary
//! built from them. Which query counts the nodes is each store's own;
//! what the counts mean is written once, here.

use std::collections::HashMap;
use treeshift_core::{Changes, Kind, LeftAlone, RoundState, Status, Summary, ToCopy, Totals};

use crate::RoundProgress;

/// The statistics of one side at one depth, as stored in `*_stats`.
#[derive(Default)]
pub struct DepthStats {
    folders: i64,
    files: i64,
    symlinks: i64,
    special: i64,
    bytes: i64,
    by_status: [i64; Status::ALL.len()],
    extra_bytes: i64,
    to_copy_files: i64,
    to_copy_folders: i64,
    to_copy_bytes: i64,
    to_copy_metadata: i64,
    left_alone_items: i64,
    left_alone_bytes: i64,
}

impl DepthStats {
    /// Adds `count` nodes of kind code `kind` and comparison `status`
    /// (`None`: not compared yet) holding `bytes`; `meta_only`: the
    /// difference is in metadata alone.
    pub fn add(
        &mut self,
        kind: u8,
        status: Option<Status>,
        meta_only: bool,
        count: i64,
        bytes: i64,
    ) {
        let kind = Kind::from_code(kind);
        match kind {
            Some(Kind::Folder) => self.folders += count,
            Some(Kind::File) => {
                self.files += count;
                self.bytes += bytes;
            }
            Some(Kind::Symlink) => self.symlinks += count,
            Some(Kind::Special) => self.special += count,
            None => {}
        }
        let Some(status) = status else { return };
        if let Some(i) = Status::ALL.iter().position(|s| *s == status) {
            self.by_status[i] += count;
        }
        // What the default approval does: creates what is missing, updates
        // what is outdated, leaves what differs (or conflicts) alone.
        match (status, kind) {
            (Status::Extra, Some(Kind::File)) => self.extra_bytes += bytes,
            (Status::Outdated, _) if meta_only => self.to_copy_metadata += count,
            (Status::Missing | Status::Outdated, Some(Kind::File)) => {
                self.to_copy_files += count;
                self.to_copy_bytes += bytes;
            }
            (Status::Missing, Some(Kind::Folder)) => self.to_copy_folders += count,
            (Status::Differs | Status::Conflict, _) => {
                self.left_alone_items += count;
                if kind == Some(Kind::File) {
                    self.left_alone_bytes += bytes;
                }
            }
            _ => {}
        }
    }

    /// `(key, value)` rows; every key is written, zeros included.
    pub fn rows(&self) -> Vec<(&'static str, i64)> {
        let mut rows = vec![
            ("folders", self.folders),
            ("files", self.files),
            ("symlinks", self.symlinks),
            ("special", self.special),
            ("bytes", self.bytes),
        ];
        rows.extend(
            Status::ALL
                .iter()
                .zip(self.by_status)
                .map(|(s, n)| (s.as_str(), n)),
        );
        rows.extend([
            ("extra_bytes", self.extra_bytes),
            ("to_copy_files", self.to_copy_files),
            ("to_copy_folders", self.to_copy_folders),
            ("to_copy_bytes", self.to_copy_bytes),
            ("to_copy_metadata", self.to_copy_metadata),
            ("left_alone_items", self.left_alone_items),
            ("left_alone_bytes", self.left_alone_bytes),
        ]);
        rows
    }
}

/// The discovery summary from each side's statistics summed over depths
/// (`src`, `dst`: key to value), the folders whose listing failed, where
/// the rounds stand, the pass and what changed since the previous one.
pub fn summary_from(
    src: &HashMap<String, i64>,
    dst: &HashMap<String, i64>,
    failed: u64,
    progress: &RoundProgress,
    pass: u32,
    changes: Changes,
) -> Summary {
    let get = |m: &HashMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(0).max(0) as u64;
    let totals = |m| Totals {
        folders: get(m, "folders"),
        files: get(m, "files"),
        symlinks: get(m, "symlinks"),
        special: get(m, "special"),
        bytes: get(m, "bytes"),
    };
    let src_totals = totals(src);
    let classified: u64 = Status::ALL
        .iter()
        .filter(|st| **st != Status::Extra)
        .map(|st| get(src, st.as_str()))
        .sum();
    let src_nodes =
        src_totals.folders + src_totals.files + src_totals.symlinks + src_totals.special;
    Summary {
        pass,
        changes,
        dst: totals(dst),
        missing: get(src, "missing"),
        same: get(src, "same"),
        differs: get(src, "differs"),
        conflict: get(src, "conflict"),
        extra: get(dst, "extra"),
        excluded: get(src, "excluded"),
        invalid_name: get(src, "invalid-name") + get(dst, "invalid-name"),
        failed,
        unclassified: src_nodes.saturating_sub(classified),
        outdated: get(src, "outdated"),
        to_copy: ToCopy {
            files: get(src, "to_copy_files"),
            folders: get(src, "to_copy_folders"),
            bytes: get(src, "to_copy_bytes"),
            metadata: get(src, "to_copy_metadata"),
        },
        left_alone: LeftAlone {
            items: get(src, "left_alone_items"),
            bytes: get(src, "left_alone_bytes"),
        },
        src: src_totals,
        src_rounds: RoundState {
            sealed: progress.src_sealed.map_or(0, |d| d as u64 + 1),
            done: progress.src_done,
        },
        dst_rounds: RoundState {
            sealed: progress.dst_sealed.map_or(0, |d| d as u64 + 1),
            done: progress.dst_done,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_stats_count_kinds_statuses_and_what_is_to_copy() {
        let mut stats = DepthStats::default();
        stats.add(Kind::File.code(), Some(Status::Missing), false, 3, 300);
        stats.add(Kind::File.code(), Some(Status::Differs), false, 2, 20);
        stats.add(Kind::File.code(), Some(Status::Extra), false, 1, 7);
        stats.add(Kind::File.code(), None, false, 4, 40);
        stats.add(Kind::Folder.code(), Some(Status::Missing), false, 5, 0);
        stats.add(Kind::Folder.code(), Some(Status::Same), false, 6, 0);
        stats.add(Kind::Symlink.code(), Some(Status::Conflict), false, 1, 0);
        stats.add(Kind::Special.code(), Some(Status::Excluded), false, 1, 0);
        stats.add(Kind::File.code(), Some(Status::InvalidName), false, 2, 9);
        stats.add(Kind::File.code(), Some(Status::Outdated), false, 3, 30);
        stats.add(Kind::File.code(), Some(Status::Outdated), true, 1, 5);
        stats.add(Kind::Folder.code(), Some(Status::Outdated), true, 2, 0);
        let rows: std::collections::HashMap<_, _> = stats.rows().into_iter().collect();
        let expected = [
            ("folders", 13),
            ("files", 16),
            ("symlinks", 1),
            ("special", 1),
            ("bytes", 411),
            ("missing", 8),
            ("outdated", 6),
            ("same", 6),
            ("differs", 2),
            ("conflict", 1),
            ("extra", 1),
            ("excluded", 1),
            ("invalid-name", 2),
            ("extra_bytes", 7),
            ("to_copy_files", 6),
            ("to_copy_folders", 5),
            ("to_copy_bytes", 330),
            ("to_copy_metadata", 3),
            ("left_alone_items", 3),
            ("left_alone_bytes", 20),
        ];
        assert_eq!(rows.len(), expected.len(), "every key, once");
        for (key, value) in expected {
            assert_eq!(rows[key], value, "{key}");
        }
    }
}
