//! The policy's rules as SQL (`treeshift_state::plan_sql::plan_cases`),
//! checked on DuckDB against the rules in Rust.

#[cfg(test)]
mod tests {
    use duckdb::Connection;
    use treeshift_core::{Fact, Policy, Why};
    use treeshift_core::{Status, decide};
    use treeshift_state::plan_sql::plan_cases;

    /// The SQL gives every combination of facts the action and reason
    /// the rules give it in Rust.
    #[test]
    fn the_sql_decides_as_the_rules_do() {
        let conn = Connection::open_in_memory().unwrap();
        let statuses = [
            Status::Missing,
            Status::Differs,
            Status::Outdated,
            Status::Conflict,
        ];
        for policy in [
            Policy::Skip,
            Policy::Overwrite,
            Policy::Newer,
            Policy::Rename,
        ] {
            let (action, reason) = plan_cases(
                policy,
                |f| match f {
                    Fact::Special => "special".into(),
                    Fact::UnheldSymlink => "unheld".into(),
                    Fact::Is(s) => format!("st = '{}'", s.as_str()),
                    Fact::MetadataOnly => "meta_only".into(),
                    Fact::SourceNewer => "newer".into(),
                },
                "st",
            );
            for bits in 0..16u8 {
                for status in statuses {
                    let [special, unheld, meta_only, newer] =
                        [0, 1, 2, 3].map(|i| bits & (1 << i) != 0);
                    let (sql_action, sql_reason): (String, Option<String>) = conn
                        .query_row(
                            &format!(
                                "SELECT {action}, {reason} FROM (SELECT ?::BOOLEAN AS special, \
                                 ?::BOOLEAN AS unheld, ?::BOOLEAN AS meta_only, ?::BOOLEAN AS newer, \
                                 ?::VARCHAR AS st)"
                            ),
                            duckdb::params![special, unheld, meta_only, newer, status.as_str()],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .unwrap();
                    let rule = decide(policy, |f| match f {
                        Fact::Special => special,
                        Fact::UnheldSymlink => unheld,
                        Fact::Is(s) => s == status,
                        Fact::MetadataOnly => meta_only,
                        Fact::SourceNewer => newer,
                    });
                    let why = match rule.why {
                        Why::Nothing => None,
                        Why::Text(t) => Some(t.to_string()),
                        Why::StatusUnderSkip => Some(format!("{} (policy skip)", status.as_str())),
                    };
                    assert_eq!(
                        (sql_action.as_str(), sql_reason),
                        (rule.action.as_str(), why),
                        "{policy} {status:?} special={special} unheld={unheld} meta_only={meta_only} newer={newer}"
                    );
                }
            }
        }
    }
}
