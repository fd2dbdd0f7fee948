//! What a plan does with each source item that is not in step with the
//! destination, and why: the policy's rules, in order, the first that
//! holds deciding. Every store renders the same rules into its own set-based
//! query (see [`Rule`]); [`decide`] evaluates them for one item.

use crate::model::Status;
use crate::plan::{Action, Policy};

/// A fact about an item, as a rule's condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fact {
    /// It is a special file (a device, a socket, a FIFO).
    Special,
    /// It is a symlink, and the destination cannot hold symlinks.
    UnheldSymlink,
    /// Its comparison status is this one.
    Is(Status),
    /// Only its metadata differs (the comparison's reason starts with
    /// `metadata:`): the data is in step.
    MetadataOnly,
    /// The source's mtime is later than the destination's, in whole
    /// seconds (as discovery compares).
    SourceNewer,
}

/// Why an item is left as the rule leaves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// No reason to give: the item is acted on.
    Nothing,
    /// This text.
    Text(&'static str),
    /// Its status, then ` (policy skip)`.
    StatusUnderSkip,
}

/// One rule: when all of `when` hold (none: always), the item gets
/// `action`, for the reason `why`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The facts that must all hold.
    pub when: &'static [Fact],
    /// What the plan does.
    pub action: Action,
    /// Why, when it is left alone.
    pub why: Why,
}

/// Why a symlink is left alone when the destination cannot hold one.
pub const NO_SYMLINKS: &str = "the destination cannot hold symlinks";

const fn rule(when: &'static [Fact], action: Action, why: Why) -> Rule {
    Rule { when, action, why }
}

/// What holds under every policy, first.
const ALWAYS: [Rule; 5] = [
    rule(
        &[Fact::Special],
        Action::Skip,
        Why::Text("special files are not copied"),
    ),
    rule(&[Fact::UnheldSymlink], Action::Skip, Why::Text(NO_SYMLINKS)),
    rule(&[Fact::Is(Status::Missing)], Action::Create, Why::Nothing),
    // An update the migration owns (see `Status::Outdated`).
    rule(
        &[Fact::Is(Status::Outdated), Fact::MetadataOnly],
        Action::Metadata,
        Why::Nothing,
    ),
    rule(&[Fact::Is(Status::Outdated)], Action::Replace, Why::Nothing),
];

const OVERWRITE: [Rule; 2] = [
    rule(&[Fact::MetadataOnly], Action::Metadata, Why::Nothing),
    rule(&[], Action::Replace, Why::Nothing),
];

const RENAME: [Rule; 2] = [
    rule(&[Fact::MetadataOnly], Action::Metadata, Why::Nothing),
    rule(&[], Action::Rename, Why::Nothing),
];

const NEWER: [Rule; 4] = [
    rule(
        &[Fact::MetadataOnly],
        Action::Skip,
        Why::Text("only metadata differs (policy newer)"),
    ),
    rule(
        &[Fact::Is(Status::Differs), Fact::SourceNewer],
        Action::Replace,
        Why::Nothing,
    ),
    rule(
        &[Fact::Is(Status::Differs)],
        Action::Skip,
        Why::Text("the destination is not older (policy newer)"),
    ),
    rule(
        &[],
        Action::Skip,
        Why::Text("kinds differ (policy newer leaves conflicts alone)"),
    ),
];

const SKIP: [Rule; 2] = [
    rule(
        &[Fact::MetadataOnly],
        Action::Skip,
        Why::Text("only metadata differs (policy skip)"),
    ),
    rule(&[], Action::Skip, Why::StatusUnderSkip),
];

/// The rules of `policy`, in order; the last always holds. They apply to
/// items whose status is missing, differs, outdated or conflict.
pub fn rules(policy: Policy) -> impl Iterator<Item = &'static Rule> {
    let own: &'static [Rule] = match policy {
        Policy::Overwrite => &OVERWRITE,
        Policy::Rename => &RENAME,
        Policy::Newer => &NEWER,
        Policy::Skip => &SKIP,
    };
    ALWAYS.iter().chain(own)
}

/// The rule `policy` applies to an item of which `holds` tells each fact.
pub fn decide(policy: Policy, holds: impl Fn(Fact) -> bool) -> &'static Rule {
    rules(policy)
        .find(|r| r.when.iter().all(|f| holds(*f)))
        .expect("the last rule of every policy always holds")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An item: its status, whether only metadata differs, whether the
    /// source is newer.
    fn item(policy: Policy, status: Status, metadata_only: bool, newer: bool) -> (Action, Why) {
        let r = decide(policy, |f| match f {
            Fact::Special | Fact::UnheldSymlink => false,
            Fact::Is(s) => s == status,
            Fact::MetadataOnly => metadata_only,
            Fact::SourceNewer => newer,
        });
        (r.action, r.why)
    }

    #[test]
    fn missing_and_outdated_items_are_copied_under_every_policy() {
        for policy in [
            Policy::Skip,
            Policy::Overwrite,
            Policy::Newer,
            Policy::Rename,
        ] {
            assert_eq!(
                item(policy, Status::Missing, false, false).0,
                Action::Create
            );
            assert_eq!(
                item(policy, Status::Outdated, false, false).0,
                Action::Replace
            );
            assert_eq!(
                item(policy, Status::Outdated, true, false).0,
                Action::Metadata
            );
            let special = decide(policy, |f| {
                f == Fact::Special || f == Fact::Is(Status::Missing)
            });
            assert_eq!(special.action, Action::Skip);
        }
    }

    #[test]
    fn destination_data_is_replaced_only_where_the_policy_says() {
        use Status::{Conflict, Differs};
        assert_eq!(
            item(Policy::Skip, Differs, false, true),
            (Action::Skip, Why::StatusUnderSkip)
        );
        assert_eq!(item(Policy::Skip, Conflict, false, true).0, Action::Skip);
        assert_eq!(
            item(Policy::Overwrite, Conflict, false, false).0,
            Action::Replace
        );
        assert_eq!(
            item(Policy::Rename, Differs, false, false).0,
            Action::Rename
        );
        assert_eq!(item(Policy::Newer, Differs, false, true).0, Action::Replace);
        assert_eq!(item(Policy::Newer, Differs, false, false).0, Action::Skip);
        assert_eq!(item(Policy::Newer, Conflict, false, true).0, Action::Skip);
        assert_eq!(
            item(Policy::Overwrite, Differs, true, false).0,
            Action::Metadata
        );
        assert_eq!(item(Policy::Newer, Differs, true, true).0, Action::Skip);
    }
}
