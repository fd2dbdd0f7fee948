//! What a migration keeps of each item besides its data and mtime: modes,
//! owners, extended attributes and ACLs, hard links. Chosen once per
//! migration (part of its settings and of the approved plan).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// What a tree holds of an item besides its data and mtime, where its
/// storage has it; `None` where it has not, or where the migration does
/// not keep it (then it is neither compared nor set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Meta {
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: Option<u32>,
    /// The owner's user id.
    pub uid: Option<u32>,
    /// The owner's group id.
    pub gid: Option<u32>,
    /// A digest of the extended attributes the migration keeps (ACLs among
    /// them, see [`Keep::keeps_xattr`]); `Some(0)` when there are none.
    pub xattrs: Option<u64>,
}

/// The identity of a folder or file: its device and inode (the names of a
/// file with several share it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The device.
    pub dev: u64,
    /// The inode.
    pub ino: u64,
}

/// One extended attribute: its full name (with namespace) and value.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// What owners a migration keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owners {
    /// The source's user and group ids, as they are (`cp -a` as root).
    Keep,
    /// None: the destination's items belong to whoever runs the copy.
    #[default]
    Ignore,
    /// The source's ids through a map between the two systems' ids; ids
    /// the map does not name are kept.
    Map(OwnerMap),
}

/// Source ids to destination ids, resolved from names when the map was
/// read (so a resumed run cannot see other names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerMap {
    /// User ids.
    pub users: BTreeMap<u32, u32>,
    /// Group ids.
    pub groups: BTreeMap<u32, u32>,
}

impl fmt::Display for Owners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owners::Keep => f.write_str("keep"),
            Owners::Ignore => f.write_str("ignore"),
            Owners::Map(m) => write!(
                f,
                "map ({} users, {} groups)",
                m.users.len(),
                m.groups.len()
            ),
        }
    }
}

/// What a migration keeps besides data and mtimes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Keep {
    /// Permission bits (with setuid, setgid and sticky) of files and
    /// folders.
    pub modes: bool,
    /// Owners.
    pub owners: Owners,
    /// Extended attributes (`user.`, `trusted.`, `security.`).
    pub xattrs: bool,
    /// POSIX ACLs (`system.posix_acl_access` and `_default`).
    pub acls: bool,
    /// Files with several names are recreated as one file with those names.
    pub hard_links: bool,
}

/// What state files written before these settings existed mean: modes
/// were kept, nothing else.
impl Default for Keep {
    fn default() -> Self {
        Keep {
            modes: true,
            owners: Owners::Ignore,
            xattrs: false,
            acls: false,
            hard_links: false,
        }
    }
}

impl Keep {
    /// Everything a local-to-local migration can keep, owners as given.
    pub fn everything(owners: Owners) -> Keep {
        Keep {
            modes: true,
            owners,
            xattrs: true,
            acls: true,
            hard_links: true,
        }
    }

    /// Returns true if and only if the extended attribute `name` is one
    /// this migration keeps. Other `system.` attributes (and anything the
    /// kernel invents) are never copied.
    pub fn keeps_xattr(&self, name: &[u8]) -> bool {
        keeps_xattr(self.xattrs, self.acls, name)
    }

    /// Returns true if and only if any extended attribute is kept.
    pub fn any_xattrs(&self) -> bool {
        self.xattrs || self.acls
    }

    /// What of `meta`, as listed on `side`'s tree, the migration compares
    /// and sets: owners mapped or dropped, modes and attributes dropped
    /// when not kept.
    pub fn apply(&self, side: crate::Side, meta: Meta) -> Meta {
        let (uid, gid) = match (&self.owners, side) {
            (Owners::Ignore, _) => (None, None),
            (Owners::Keep, _) | (Owners::Map(_), crate::Side::Dst) => (meta.uid, meta.gid),
            (Owners::Map(map), crate::Side::Src) => (
                meta.uid.map(|u| *map.users.get(&u).unwrap_or(&u)),
                meta.gid.map(|g| *map.groups.get(&g).unwrap_or(&g)),
            ),
        };
        Meta {
            mode: meta.mode.filter(|_| self.modes),
            uid,
            gid,
            xattrs: meta.xattrs.filter(|_| self.any_xattrs()),
        }
    }

    /// The settings as short words, for summaries and logs.
    pub fn describe(&self) -> String {
        let mut kept = Vec::new();
        if self.modes {
            kept.push("modes".to_string());
        }
        if self.owners != Owners::Ignore {
            kept.push(format!("owners ({})", self.owners));
        }
        for (on, what) in [
            (self.xattrs, "xattrs"),
            (self.acls, "ACLs"),
            (self.hard_links, "hard links"),
        ] {
            if on {
                kept.push(what.to_string());
            }
        }
        if kept.is_empty() {
            "data and mtimes only".into()
        } else {
            kept.join(", ")
        }
    }
}

/// See [`Keep::keeps_xattr`].
pub fn keeps_xattr(xattrs: bool, acls: bool, name: &[u8]) -> bool {
    if name.starts_with(b"system.posix_acl_") {
        return acls
            && matches!(
                name,
                b"system.posix_acl_access" | b"system.posix_acl_default"
            );
    }
    xattrs
        && (name.starts_with(b"user.")
            || name.starts_with(b"trusted.")
            || name.starts_with(b"security."))
}

/// A digest of a set of extended attributes, the same whatever their
/// order: what discovery records and compares (`0` for none).
pub fn xattr_digest(attrs: &[Xattr]) -> u64 {
    let mut sorted: Vec<&Xattr> = attrs.iter().collect();
    sorted.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    };
    for (name, value) in &sorted {
        eat(name);
        eat(value);
    }
    if sorted.is_empty() { 0 } else { h | 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Side;

    #[test]
    fn kept_attributes_by_namespace() {
        let both = |n: &[u8]| (keeps_xattr(true, false, n), keeps_xattr(false, true, n));
        assert_eq!(both(b"user.comment"), (true, false));
        assert_eq!(both(b"security.capability"), (true, false));
        assert_eq!(both(b"trusted.x"), (true, false));
        assert_eq!(both(b"system.posix_acl_access"), (false, true));
        assert_eq!(both(b"system.posix_acl_default"), (false, true));
        assert_eq!(both(b"system.nfs4_acl"), (false, false));
        assert_eq!(both(b"system.posix_acl_other"), (false, false));
    }

    #[test]
    fn digests_ignore_order_and_tell_sets_apart() {
        let a = (b"user.a".to_vec(), b"1".to_vec());
        let b = (b"user.b".to_vec(), b"2".to_vec());
        assert_eq!(xattr_digest(&[]), 0);
        assert_ne!(xattr_digest(std::slice::from_ref(&a)), 0);
        assert_eq!(
            xattr_digest(&[a.clone(), b.clone()]),
            xattr_digest(&[b.clone(), a.clone()])
        );
        let ab = (b"user.ab".to_vec(), b"".to_vec());
        let a_b = (b"user.a".to_vec(), b"b".to_vec());
        assert_ne!(xattr_digest(&[ab]), xattr_digest(&[a_b]));
    }

    #[test]
    fn owners_are_kept_mapped_or_dropped() {
        let meta = Meta {
            mode: Some(0o4755),
            uid: Some(1000),
            gid: Some(50),
            xattrs: Some(7),
        };
        let keep = Keep::everything(Owners::Keep);
        assert_eq!(keep.apply(Side::Src, meta), meta);
        let ignore = Keep {
            xattrs: false,
            acls: false,
            ..Keep::everything(Owners::Ignore)
        };
        let got = ignore.apply(Side::Src, meta);
        assert_eq!((got.uid, got.gid, got.xattrs), (None, None, None));
        let map = Owners::Map(OwnerMap {
            users: [(1000, 2000)].into(),
            groups: [(51, 60)].into(),
        });
        let mapped = Keep::everything(map);
        let got = mapped.apply(Side::Src, meta);
        assert_eq!((got.uid, got.gid), (Some(2000), Some(50)));
        assert_eq!(mapped.apply(Side::Dst, meta).uid, Some(1000), "dst as is");
        let text = serde_json::to_string(&mapped).unwrap();
        assert_eq!(serde_json::from_str::<Keep>(&text).unwrap(), mapped);
        assert_eq!(serde_json::from_str::<Keep>("{}").unwrap(), Keep::default());
    }
}
