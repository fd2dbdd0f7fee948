//! A location's options, `?key=value&...`, as the remote locations
//! (`s3://`, `webdav://`, `sftp://`, ...) take them and print them back.

use std::fmt;

/// Parses a query string into its options, in the order given: each one
/// `key=value`, a key among `known` (which `scheme` takes), and none twice.
/// The error says what is wrong.
pub(crate) fn parse(
    query: &str,
    scheme: &str,
    known: &[&str],
) -> Result<Vec<(String, String)>, String> {
    let mut options: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("option '{pair}' is not key=value"))?;
        if !known.contains(&k) {
            return Err(format!(
                "unknown option '{k}' ({scheme} takes: {})",
                known.join(", ")
            ));
        }
        if options.iter().any(|(seen, _)| seen == k) {
            return Err(format!("option '{k}' given twice"));
        }
        options.push((k.to_string(), v.to_string()));
    }
    Ok(options)
}

/// Writes the options back as the query string they came from.
pub(crate) fn write(f: &mut fmt::Formatter<'_>, options: &[(String, String)]) -> fmt::Result {
    for (i, (k, v)) in options.iter().enumerate() {
        write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
    }
    Ok(())
}
