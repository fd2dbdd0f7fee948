//! The HTTP transport under a remote backend: every request OpenDAL makes
//! passes here, so throttling, a store's brief failures, pacing and
//! timeouts are handled once, at the one place that sees each response.
//!
//! - A response that says "later" (429, 503 SlowDown, 500, 502, 504, 408)
//!   is retried after the store's `Retry-After`, or a jittered exponential
//!   backoff, up to the policy's attempts; then it goes up as it came.
//! - A request that never reached the server (connection refused, connect
//!   timeout) is retried the same way; one that may have reached it
//!   (a reset mid-response) is not: it goes up, and the engine retries the
//!   whole operation, which checks the destination again first.
//! - `tps` spaces requests at most that many a second, across all workers.
//! - Connecting and each read of a response have a timeout; a transfer as
//!   a whole has none (a large part on a slow link may take long).

use crate::RetryPolicy;
use crate::traffic::{Counters, Pace};
use http::{Request, Response, StatusCode};
use opendal::{Buffer, HttpBody, HttpTransport};
use opendal_http_transport_reqwest::ReqwestTransport;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long to wait for a connection, and for each read of a response.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The retries a request gets here, before its failure goes up to the
/// engine (which retries whole operations on top).
pub(super) const REQUEST_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    base_delay: Duration::from_millis(200),
    max_delay: Duration::from_secs(20),
};

/// See the module documentation.
pub(super) struct Transport {
    inner: ReqwestTransport,
    retry: RetryPolicy,
    pace: Option<Pace>,
    counts: Arc<Counters>,
}

impl Transport {
    /// A transport sending at most `tps` requests a second (unlimited when
    /// `None`).
    pub(super) fn new(tps: Option<u32>) -> Result<Transport, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()?;
        Ok(Transport {
            inner: ReqwestTransport::new(client),
            retry: REQUEST_RETRY,
            pace: Pace::new(tps),
            counts: Arc::default(),
        })
    }

    /// Its counters, to read while OpenDAL owns the transport.
    pub(super) fn counters(&self) -> Arc<Counters> {
        self.counts.clone()
    }

    async fn wait(&self, d: Duration) {
        tokio::time::sleep(d).await;
        self.waited(d);
    }

    fn waited(&self, d: Duration) {
        self.counts.waited(d);
    }
}

impl HttpTransport for Transport {
    async fn fetch(&self, req: Request<Buffer>) -> opendal::Result<Response<HttpBody>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(pace) = &self.pace {
                let slot = pace.slot();
                let waited = slot.saturating_duration_since(std::time::Instant::now());
                tokio::time::sleep_until(slot.into()).await;
                self.waited(waited);
            }
            self.counts.sent.fetch_add(1, Ordering::Relaxed);
            if attempt > 1 {
                self.counts.retried.fetch_add(1, Ordering::Relaxed);
            }
            // A request's body is a shared buffer: the clone is cheap, and
            // the same signed request goes again.
            match self.inner.fetch(req.clone()).await {
                Ok(response) => {
                    let status = response.status();
                    if !worth_retrying(status) || !self.retry.again(attempt) {
                        return Ok(response);
                    }
                    let counter = if is_throttling(status) {
                        &self.counts.throttled
                    } else {
                        &self.counts.failed_briefly
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let hint = retry_after(response.headers());
                    drop(response);
                    self.wait(self.retry.delay(attempt, hint)).await;
                }
                Err(e) if never_sent(&e) && self.retry.again(attempt) => {
                    self.counts.failed_briefly.fetch_add(1, Ordering::Relaxed);
                    self.wait(self.retry.delay(attempt, None)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Statuses that mean "not now" rather than "no".
fn worth_retrying(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

fn is_throttling(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 503)
}

/// Whether the request failed before anything was sent: no connection
/// (refused, unreachable, or a connect timeout). Retrying it cannot do an
/// operation twice.
fn never_sent(e: &opendal::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(r) = c.downcast_ref::<reqwest::Error>() {
            return r.is_connect();
        }
        cause = c.source();
    }
    false
}

/// The wait a `Retry-After` header asks for: seconds, or an HTTP date.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(text).ok()?.timestamp();
    let from_now = at.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(from_now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO), "in the past");
        let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30);
        let text = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&soon)
            .unwrap();
        headers.insert(http::header::RETRY_AFTER, text.parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        headers.insert(http::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn only_not_now_answers_are_retried() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(worth_retrying(StatusCode::from_u16(code).unwrap()));
        }
        for code in [200, 204, 304, 400, 403, 404, 409, 412, 501] {
            assert!(!worth_retrying(StatusCode::from_u16(code).unwrap()));
        }
    }
}
