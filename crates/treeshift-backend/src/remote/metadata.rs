//! What an object's metadata says, as treeshift reads it, and what it
//! writes there: an entry from a listing or a stat (kind, size, the
//! store's time of the write, etag, the MD5 of the content where the
//! store gives it), and a file's own mtime under the keys rclone and
//! gsutil use.

use super::Service;
use std::time::UNIX_EPOCH;
use treeshift_core::{Entry, Kind, Md5};

/// An entry of a listing or a stat; the mtime is the store's own time of
/// the object's last write.
pub(super) fn entry_of(service: Service, name: &str, meta: &opendal::Metadata) -> Entry {
    let kind = if meta.is_dir() {
        Kind::Folder
    } else {
        Kind::File
    };
    let mtime_ns = meta.last_modified().map(|t| {
        let t: std::time::SystemTime = t.into();
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
            Err(e) => -(e.duration().as_nanos().min(i64::MAX as u128) as i64),
        }
    });
    let mut entry = Entry::new(
        name.trim_end_matches('/').as_bytes().to_vec(),
        kind,
        if kind == Kind::Folder {
            0
        } else {
            meta.content_length()
        },
        mtime_ns,
    );
    entry.etag = meta.etag().map(|e| e.trim_matches('"').to_string());
    entry.md5 = content_md5(service, meta);
    entry
}

/// The MD5 of an object's content, where its listing gives it: Azure's
/// and GCS's `Content-MD5` (base64; none for a blob put in blocks or a
/// composed object), or an S3 ETag of 32 hex digits (a single-part
/// upload's; a multipart upload's has a `-parts` suffix). An S3 object
/// encrypted with SSE-KMS or SSE-C has an ETag of that shape that is not
/// its MD5, as rclone also assumes: such an object compares as differing
/// and is copied again, never taken as the same.
fn content_md5(service: Service, meta: &opendal::Metadata) -> Option<Md5> {
    use base64::Engine as _;
    if let Some(encoded) = meta.content_md5().filter(|m| !m.is_empty()) {
        let digest = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        return Some(Md5(digest.try_into().ok()?));
    }
    match service {
        Service::S3 => Md5::from_hex(meta.etag()?.trim_matches('"')),
        Service::Azblob | Service::Gcs | Service::Webdav => None,
    }
}

/// The user-metadata key an mtime goes under: rclone's on each service,
/// so each tool reads the other's.
const MTIME_KEY: &str = "mtime";

/// Where gsutil keeps a file's mtime on GCS, in whole seconds.
const GSUTIL_MTIME_KEY: &str = "goog-reserved-file-mtime";

/// The user metadata that keeps an mtime, as rclone writes it on each
/// service: on S3 (and WebDAV) seconds since the epoch with the nanoseconds as a
/// fraction, on Azure and GCS RFC 3339 with nanoseconds; on GCS also
/// gsutil's whole seconds.
pub(super) fn mtime_metadata(service: Service, ns: i64) -> Vec<(String, String)> {
    let (secs, nanos) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    let text = match service {
        Service::S3 | Service::Webdav => None,
        Service::Azblob | Service::Gcs => jiff::Timestamp::from_nanosecond(i128::from(ns))
            .ok()
            .map(|t| format!("{t:.9}")),
    };
    let text = text.unwrap_or_else(|| format!("{secs}.{nanos:09}"));
    let mut out = vec![(MTIME_KEY.to_string(), text)];
    if service == Service::Gcs {
        out.push((GSUTIL_MTIME_KEY.to_string(), secs.to_string()));
    }
    out
}

/// The object's own mtime, from its metadata in any form
/// [`mtime_metadata`] writes (rclone's key first, then gsutil's).
pub(super) fn own_mtime(meta: &opendal::Metadata) -> Option<i64> {
    let m = meta.user_metadata()?;
    m.get(MTIME_KEY).and_then(parse_mtime).or_else(|| {
        m.get(GSUTIL_MTIME_KEY)?
            .parse::<i64>()
            .ok()?
            .checked_mul(1_000_000_000)
    })
}

/// An mtime in any form [`mtime_metadata`] writes: seconds since the
/// epoch with an optional fraction of up to nine digits, or RFC 3339.
fn parse_mtime(text: &str) -> Option<i64> {
    if text.contains('T') {
        let t: jiff::Timestamp = text.parse().ok()?;
        return i64::try_from(t.as_nanosecond()).ok();
    }
    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
    let secs: i64 = secs.parse().ok()?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = format!("{frac:0<9}").parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn mtimes_are_written_as_rclone_does() {
        let ns = 1_700_000_000_123_456_789;
        let written = |service, ns| -> HashMap<String, String> {
            mtime_metadata(service, ns).into_iter().collect()
        };
        assert_eq!(written(Service::S3, ns)["mtime"], "1700000000.123456789");
        assert_eq!(
            written(Service::Azblob, ns)["mtime"],
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            written(Service::Gcs, ns)["goog-reserved-file-mtime"],
            "1700000000"
        );
        let read = |metadata: HashMap<String, String>| {
            let mut built = opendal::MetadataBuilder::file(0);
            built.user_metadata(metadata);
            own_mtime(&built.build())
        };
        for service in [Service::S3, Service::Azblob, Service::Gcs] {
            for ns in [ns, 0, 5, -1_500_000_000] {
                assert_eq!(read(written(service, ns)), Some(ns), "{service:?}");
            }
        }
        let gsutil = HashMap::from([(GSUTIL_MTIME_KEY.to_string(), "7".to_string())]);
        assert_eq!(read(gsutil), Some(7_000_000_000));
        assert_eq!(parse_mtime("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(parse_mtime("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(
            parse_mtime("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(parse_mtime("x"), None);
    }

    #[test]
    fn a_listed_md5_is_azure_and_gcs_content_md5_or_an_s3_single_part_etag() {
        let md5 = |service, etag: &str, listed: Option<&str>| {
            let mut built = opendal::MetadataBuilder::file(4);
            built.etag(etag);
            if let Some(m) = listed {
                built.content_md5(m);
            }
            content_md5(service, &built.build()).map(|m| m.to_string())
        };
        let hex = "d41d8cd98f00b204e9800998ecf8427e";
        assert_eq!(
            md5(Service::S3, &format!("\"{hex}\""), None).as_deref(),
            Some(hex)
        );
        // A multipart upload's ETag is no MD5.
        assert_eq!(md5(Service::S3, &format!("\"{hex}-2\""), None), None);
        // Azure's ETag is a version tag; its Content-MD5 is base64.
        let base64 = "1B2M2Y8AsgTpgAmY7PhCfg==";
        assert_eq!(
            md5(Service::Azblob, "0x8DC", Some(base64)).as_deref(),
            Some(hex)
        );
        assert_eq!(md5(Service::Azblob, hex, None), None);
        assert_eq!(md5(Service::Gcs, "CKih16", Some("")), None);
        assert_eq!(md5(Service::Webdav, hex, None), None);
    }
}
