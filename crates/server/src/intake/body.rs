//! Reading a request body within Segment's limits: the raw body is capped, a gzip body is
//! inflated only up to the limit (so a gzip bomb stops at the limit, not at the memory's end),
//! and a body that trickles in slower than the read timeout is cut off.

use axum::body::Body;
use axum::http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use std::io::Read;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("the request body exceeds {what} ({limit} bytes)")]
    TooLarge { what: &'static str, limit: usize },
    #[error("the body is not valid gzip: {0}")]
    BadGzip(String),
    #[error("Content-Encoding {0:?} is not supported (send gzip or no encoding)")]
    Encoding(String),
    #[error("the request body did not arrive within {0:?}")]
    Timeout(Duration),
    #[error("the request body could not be read: {0}")]
    Read(String),
}

/// The body's raw bytes, as sent (still compressed), within the time and size it may take.
/// `limit` is the decompressed limit; compressed data is rarely larger than its content, so
/// the raw cap leaves room for gzip's own framing.
pub async fn collect(
    body: Body,
    what: &'static str,
    limit: usize,
    timeout: Duration,
) -> Result<axum::body::Bytes, BodyError> {
    let raw_limit = limit + limit / 8 + 1024;
    let collected = tokio::time::timeout(timeout, Limited::new(body, raw_limit).collect()).await;
    match collected {
        Err(_) => Err(BodyError::Timeout(timeout)),
        Ok(Err(e)) => Err(
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                BodyError::TooLarge { what, limit }
            } else {
                BodyError::Read(e.to_string())
            },
        ),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// The request's `Content-Encoding`, lowercased; `None` for none or `identity`.
pub fn encoding(headers: &HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty() && v != "identity")
}

/// The body's content: decompressed when `encoding` says gzip, at most `limit` bytes.
pub fn decode(
    raw: &[u8],
    encoding: Option<&str>,
    what: &'static str,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    match encoding {
        None => {
            if raw.len() > limit {
                return Err(BodyError::TooLarge { what, limit });
            }
            Ok(raw.to_vec())
        }
        Some("gzip" | "x-gzip") => inflate(raw, what, limit),
        Some(other) => Err(BodyError::Encoding(other.to_string())),
    }
}

/// Inflates at most `limit` bytes; one byte more means the body is over the limit.
pub fn inflate(raw: &[u8], what: &'static str, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BodyError::BadGzip(e.to_string()))?;
    if out.len() > limit {
        return Err(BodyError::TooLarge { what, limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 100 MB of zeros compress to ~100 KB; inflating stops after limit + 1 bytes.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..100 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        assert!(bomb.len() < 500 * 1024);
        assert_eq!(
            inflate(&bomb, "the batch limit", 500 * 1024),
            Err(BodyError::TooLarge {
                what: "the batch limit",
                limit: 500 * 1024
            })
        );
    }

    #[test]
    fn gzip_within_the_limit_inflates_and_garbage_is_refused() {
        assert_eq!(
            inflate(&gzip(b"{\"a\":1}"), "x", 100).unwrap(),
            b"{\"a\":1}"
        );
        assert!(matches!(
            inflate(b"not gzip at all", "x", 100),
            Err(BodyError::BadGzip(_))
        ));
    }
}
