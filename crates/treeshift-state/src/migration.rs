//! A migration's identity as every store records and checks it: the two
//! locations, and the settings discovery runs with as one JSON text.

use crate::{MigrationSpec, StoreError};
use std::path::PathBuf;
use treeshift_core::{FilterSpec, Keep};

/// How a recorded migration differs from a requested one: which setting,
/// what was recorded, what is asked for now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// Which setting differs.
    pub what: &'static str,
    /// What the store holds.
    pub recorded: String,
    /// What the caller asked for.
    pub requested: String,
}

impl Difference {
    /// The error a store at `path` refuses the requested migration with.
    pub fn refused_at(self, path: PathBuf) -> StoreError {
        StoreError::OtherMigration {
            path,
            what: self.what,
            recorded: self.recorded,
            requested: self.requested,
        }
    }
}

impl MigrationSpec {
    /// The settings as the store records them (JSON text).
    pub fn settings_json(&self) -> String {
        serde_json::json!({
            "filter": self.filter,
            "dst_case_insensitive": self.dst_case_insensitive,
            "keep": self.keep,
        })
        .to_string()
    }

    /// The migration from its recorded locations and settings (as
    /// [`MigrationSpec::settings_json`] wrote them, or as older stores
    /// did). `Err`: why the settings cannot be read.
    pub fn from_recorded(src: String, dst: String, settings: &str) -> Result<Self, String> {
        let settings: serde_json::Value =
            serde_json::from_str(settings).map_err(|e| format!("unreadable settings: {e}"))?;
        // Stores from before filters grew beyond globs recorded `excludes`
        // alone.
        let filter: FilterSpec = match settings.get("filter") {
            Some(f) => serde_json::from_value(f.clone()),
            None => serde_json::from_value(serde_json::json!({ "excludes": settings["excludes"] })),
        }
        .map_err(|e| format!("unreadable filter settings: {e}"))?;
        let dst_case_insensitive = settings["dst_case_insensitive"].as_bool().unwrap_or(false);
        // Stores from before these settings kept modes only.
        let keep = match settings.get("keep") {
            Some(k) => serde_json::from_value(k.clone())
                .map_err(|e| format!("unreadable settings of what is kept: {e}"))?,
            None => Keep::default(),
        };
        Ok(MigrationSpec {
            src,
            dst,
            filter,
            dst_case_insensitive,
            keep,
        })
    }

    /// The first way `requested` differs from this recorded migration, if
    /// any: a store refuses to resume another migration.
    pub fn difference(&self, requested: &MigrationSpec) -> Option<Difference> {
        let differ = |what, recorded: String, requested: String| {
            Some(Difference {
                what,
                recorded,
                requested,
            })
        };
        let case_rule = |on: bool| {
            if on {
                "case-insensitive"
            } else {
                "case-sensitive"
            }
        };
        let rules = |f: &FilterSpec| f.rules().join(", ");
        if self.src != requested.src {
            differ("source", self.src.clone(), requested.src.clone())
        } else if self.dst != requested.dst {
            differ("destination", self.dst.clone(), requested.dst.clone())
        } else if self.dst_case_insensitive != requested.dst_case_insensitive {
            differ(
                "destination case rule",
                case_rule(self.dst_case_insensitive).into(),
                case_rule(requested.dst_case_insensitive).into(),
            )
        } else if self.keep != requested.keep {
            differ(
                "what is kept",
                self.keep.describe(),
                requested.keep.describe(),
            )
        } else if self.filter != requested.filter {
            differ(
                "filter rules",
                rules(&self.filter),
                rules(&requested.filter),
            )
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MigrationSpec {
        MigrationSpec {
            src: "/a".into(),
            dst: "s3://b/c".into(),
            filter: FilterSpec::default(),
            dst_case_insensitive: true,
            keep: Keep::default(),
        }
    }

    #[test]
    fn settings_read_back_as_written() {
        let s = spec();
        let back = MigrationSpec::from_recorded(s.src.clone(), s.dst.clone(), &s.settings_json());
        assert_eq!(back, Ok(s));
    }

    #[test]
    fn the_first_difference_is_named() {
        let s = spec();
        assert_eq!(s.difference(&s), None);
        let other = MigrationSpec {
            dst_case_insensitive: false,
            ..spec()
        };
        let d = s.difference(&other).unwrap();
        assert_eq!(
            (d.what, d.recorded.as_str(), d.requested.as_str()),
            (
                "destination case rule",
                "case-insensitive",
                "case-sensitive"
            )
        );
        assert!(MigrationSpec::from_recorded("a".into(), "b".into(), "{").is_err());
    }
}
