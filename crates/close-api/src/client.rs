//! The Close API client: HTTP Basic with the key, timeouts, pacing per endpoint group, retries
//! with backoff and jitter. Reading and writing are separate types, so code that only holds a
//! [`Reader`] (the dry-run) cannot write, by construction. It knows calls, not lookups: the
//! searcher (`crate::search`) builds on it, never the other way round.

use crate::ratelimit::{self, Pacer};
use crate::retry::{Backoff, RetryAction, classify};
use closeflow_close::stored::FieldTypes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DEFAULT_BASE_URL: &str = "https://api.close.com/api/v1/";

#[derive(Debug, Clone, thiserror::Error)]
pub enum CloseError {
    #[error("Close rejected the API key (HTTP {status}); check settings.api_key for this instance")]
    Unauthorized { status: u16 },
    #[error("Close refused the request {method} {path} (HTTP {status}): {message}")]
    Rejected {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{method} {path} still failing after {attempts} attempts: {last}")]
    Exhausted {
        method: String,
        path: String,
        attempts: u32,
        last: String,
    },
    #[error(
        "{method} {path} was interrupted ({message}); the event is planned again before retrying"
    )]
    Interrupted {
        method: String,
        path: String,
        message: String,
    },
    #[error("unexpected reply from Close for {path}: {message}")]
    BadReply { path: String, message: String },
    #[error("the Close URL `{url}` is not usable: {message}")]
    BadUrl { url: String, message: String },
    /// Nothing answers at the URL (connection refused, no such host): there is no point in
    /// trying the next event either.
    #[error("cannot connect to Close at {url}: {message}")]
    Unreachable { url: String, message: String },
}

/// A URL fit for messages: credentials in it (`https://user:pass@…`) are removed.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("");
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        Err(_) => url.split('@').next_back().unwrap_or_default().to_string(),
    }
}

/// Checks a Close base URL: `http` or `https`, with a host (the check instance files get).
pub fn check_base_url(url: &str) -> Result<(), CloseError> {
    closeflow_mapping::instance::check_url(url).map_err(|message| CloseError::BadUrl {
        url: shown_url(url),
        message,
    })
}

/// What went wrong on the wire, in words: the innermost cause (e.g. "Connection refused (os
/// error 111)"); reqwest's own message names the URL, which the caller says itself.
fn cause(e: &reqwest::Error) -> String {
    let mut last = e.without_url_ref();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        last = s.to_string();
        src = s.source();
    }
    last
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut t = self.to_string();
        if let Some(u) = self.url() {
            t = t.replace(&format!(" for url ({u})"), "");
        }
        t
    }
}

#[derive(Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub api_key: SecretString,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
    pub backoff: Backoff,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &"[redacted]")
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>, api_key: SecretString) -> Self {
        let mut base_url = base_url.into();
        if !base_url.ends_with('/') {
            base_url.push('/');
        }
        ClientConfig {
            base_url,
            api_key,
            timeout: Duration::from_secs(30),
            max_attempts: 6,
            max_age: Duration::from_secs(120),
            backoff: Backoff::default(),
        }
    }
}

/// Counters a caller can read (the tests do; an ingestion server would export them as metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: std::sync::atomic::AtomicU64,
    pub throttled: std::sync::atomic::AtomicU64,
    pub retries: std::sync::atomic::AtomicU64,
}

/// One HTTP attempt, as reported to an observer (the server turns these into metrics).
#[derive(Debug, Clone, Copy)]
pub struct CallRecord<'a> {
    /// The endpoint group (`POST /data/search/`, `GET/POST/PUT`, …): rate limits are per group.
    pub group: &'a str,
    /// `None` when no reply arrived (network error, timeout).
    pub status: Option<u16>,
    pub elapsed: Duration,
}

pub type CallObserver = Arc<dyn Fn(&CallRecord<'_>) + Send + Sync>;

/// Why an attempt failed, as far as retrying it is concerned.
enum Failed {
    /// Close answered with a retryable status: the request did not take effect.
    Status { status: u16, wait: Option<Duration> },
    /// No complete answer arrived: the request may or may not have taken effect.
    Unknown(String),
}

/// Read-only access to Close.
#[derive(Clone)]
pub struct Reader {
    http: reqwest::Client,
    cfg: Arc<ClientConfig>,
    pacer: Arc<Pacer>,
    pub stats: Arc<Stats>,
    observer: Option<CallObserver>,
    /// The organisation's custom field types, read once per client.
    types: Arc<tokio::sync::OnceCell<FieldTypes>>,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reader({})", self.cfg.base_url)
    }
}

/// Read and write access to Close.
#[derive(Clone, Debug)]
pub struct Writer {
    reader: Reader,
}

impl Reader {
    pub fn new(cfg: ClientConfig) -> Result<Reader, CloseError> {
        check_base_url(&cfg.base_url)?;
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("closeflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CloseError::BadReply {
                path: String::new(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Reader {
            http,
            cfg: Arc::new(cfg),
            pacer: Arc::new(Pacer::default()),
            stats: Arc::new(Stats::default()),
            observer: None,
            types: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// Reports every HTTP attempt (group, status, round-trip time) to `f`.
    pub fn with_observer(mut self, f: CallObserver) -> Reader {
        self.observer = Some(f);
        self
    }

    fn observe(&self, group: &str, status: Option<u16>, sent: Instant) {
        if let Some(f) = &self.observer {
            f(&CallRecord {
                group,
                status,
                elapsed: sent.elapsed(),
            });
        }
    }

    /// `GET /me/`: fails fast with [`CloseError::Unauthorized`] on a wrong key, and with
    /// [`CloseError::Unreachable`] at once when nothing listens at the URL (no retries: a run
    /// should stop with one clear error, not try every event).
    pub async fn check_credentials(&self) -> Result<(), CloseError> {
        self.call_with(reqwest::Method::GET, "me/?_fields=id", None, true)
            .await
            .map(|_| ())
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CloseError> {
        self.call_with(method, path, body, false).await
    }

    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        fail_fast: bool,
    ) -> Result<Value, CloseError> {
        use std::sync::atomic::Ordering::Relaxed;
        let url = format!("{}{}", self.cfg.base_url, path);
        let group = ratelimit::group(method.as_str(), path);
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let wait = self.pacer.reserve(&group);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
                continue;
            }
            attempt += 1;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .basic_auth(self.cfg.api_key.expose_secret(), Some(""));
            if let Some(b) = body {
                req = req.json(b);
            }
            self.stats.requests.fetch_add(1, Relaxed);
            let sent = Instant::now();
            // Network errors, timeouts and lost replies never carry credentials in their
            // message (the key travels in a header, not the URL).
            let (status, headers, text) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match resp.text().await {
                        Ok(t) => {
                            self.observe(&group, Some(status), sent);
                            (status, headers, t)
                        }
                        Err(e) => {
                            self.observe(&group, None, sent);
                            let m = format!(
                                "connection lost while reading the reply from {}: {}",
                                shown_url(&url),
                                cause(&e)
                            );
                            self.retry_or_fail(attempt, started, &method, path, Failed::Unknown(m))
                                .await?;
                            continue;
                        }
                    }
                }
                Err(e) => {
                    self.observe(&group, None, sent);
                    let shown = shown_url(&url);
                    if e.is_connect() {
                        let message = cause(&e);
                        if fail_fast {
                            return Err(CloseError::Unreachable {
                                url: shown,
                                message,
                            });
                        }
                        // Nothing listened: the request never reached Close, so even a
                        // create can be retried; after the last attempt the run stops.
                        if attempt >= self.cfg.max_attempts || started.elapsed() >= self.cfg.max_age
                        {
                            return Err(CloseError::Unreachable {
                                url: shown,
                                message,
                            });
                        }
                        self.stats.retries.fetch_add(1, Relaxed);
                        tokio::time::sleep(self.cfg.backoff.delay(attempt, None)).await;
                        continue;
                    }
                    let what = if e.is_timeout() {
                        "timed out"
                    } else {
                        "network error"
                    };
                    let m = format!("{what} talking to {shown}: {}", cause(&e));
                    self.retry_or_fail(attempt, started, &method, path, Failed::Unknown(m))
                        .await?;
                    continue;
                }
            };
            let rl = ratelimit::from_headers(&headers);
            if let Some(rl) = rl {
                self.pacer.observe(&group, rl);
            }
            let retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .or(rl.filter(|_| status == 429).map(|r| r.reset))
                .map(|s| Duration::from_secs_f64(s.max(0.0)));
            if status == 429 {
                self.stats.throttled.fetch_add(1, Relaxed);
                self.pacer
                    .block(&group, retry_after.unwrap_or(Duration::from_secs(1)));
            }
            match classify(status, retry_after) {
                RetryAction::Successful => {
                    return serde_json::from_str(&text).map_err(|e| CloseError::BadReply {
                        path: path.to_string(),
                        message: format!("not JSON ({e})"),
                    });
                }
                RetryAction::DontRetry if status == 401 || status == 403 => {
                    return Err(CloseError::Unauthorized { status });
                }
                RetryAction::DontRetry => {
                    return Err(CloseError::Rejected {
                        method: method.to_string(),
                        path: path.to_string(),
                        status,
                        message: error_message(&text),
                    });
                }
                RetryAction::Retry(wait) => {
                    self.retry_or_fail(
                        attempt,
                        started,
                        &method,
                        path,
                        Failed::Status { status, wait },
                    )
                    .await?;
                }
            }
        }
    }

    /// Waits before the next attempt, or gives up. A create whose outcome is unknown (the
    /// connection failed) is never sent again: that could create a duplicate. The caller plans
    /// the event again instead (lookups first), which converges whether or not it happened.
    async fn retry_or_fail(
        &self,
        attempt: u32,
        started: Instant,
        method: &reqwest::Method,
        path: &str,
        failed: Failed,
    ) -> Result<(), CloseError> {
        let (at_least, last) = match failed {
            Failed::Unknown(message)
                if method == reqwest::Method::POST && !path.starts_with("data/search") =>
            {
                return Err(CloseError::Interrupted {
                    method: method.to_string(),
                    path: path.to_string(),
                    message,
                });
            }
            Failed::Unknown(message) => (None, message),
            Failed::Status { status, wait } => (wait, format!("HTTP {status}")),
        };
        if attempt >= self.cfg.max_attempts || started.elapsed() >= self.cfg.max_age {
            return Err(CloseError::Exhausted {
                method: method.to_string(),
                path: path.to_string(),
                attempts: attempt,
                last,
            });
        }
        self.stats
            .retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(self.cfg.backoff.delay(attempt, at_least)).await;
        Ok(())
    }

    /// `GET` every page of a list endpoint (`status/lead/`, `custom_field/lead/`).
    pub async fn list(&self, path: &str) -> Result<Vec<Value>, CloseError> {
        let mut out: Vec<Value> = Vec::new();
        loop {
            let page = format!("{path}?_skip={}&_limit=100", out.len());
            let reply = self.call(reqwest::Method::GET, &page, None).await?;
            let Some(Value::Array(items)) = reply.get("data") else {
                return Err(bad(path, "a list reply without `data`"));
            };
            let more = !items.is_empty() && reply.get("has_more") == Some(&Value::Bool(true));
            out.extend(items.iter().cloned());
            if !more {
                return Ok(out);
            }
        }
    }

    /// The organisation's custom field types (`GET /custom_field/lead/` and `/contact/`, every
    /// page), read on first use and kept: values are compared in the form Close stores them.
    pub async fn field_types(&self) -> Result<FieldTypes, CloseError> {
        self.types
            .get_or_try_init(|| async {
                let mut lists = Vec::new();
                for kind in ["lead", "contact"] {
                    for page in 0..50 {
                        let path = format!("custom_field/{kind}/?_skip={}&_limit=100", page * 100);
                        let reply = match self.call(reqwest::Method::GET, &path, None).await {
                            Ok(r) => r,
                            // A key that may not list custom fields: values are compared as
                            // given (a replay may then rewrite a date), the run goes on.
                            Err(CloseError::Rejected { .. }) => break,
                            Err(e) => return Err(e),
                        };
                        lists.push(reply.get("data").cloned().unwrap_or(Value::Null));
                        if reply.get("has_more").and_then(Value::as_bool) != Some(true) {
                            break;
                        }
                    }
                }
                Ok(FieldTypes::from_definitions(lists.iter()))
            })
            .await
            .cloned()
    }
}

fn bad(path: &str, m: &str) -> CloseError {
    CloseError::BadReply {
        path: path.to_string(),
        message: m.to_string(),
    }
}

fn error_message(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if let Some(e) = v.get("error") {
        return match e {
            Value::String(s) => s.clone(),
            other => other
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| other.to_string(), str::to_string),
        };
    }
    if let Some(fe) = v.get("field-errors") {
        return format!("field errors: {fe}");
    }
    let t: String = body.chars().take(200).collect();
    if t.is_empty() { "no details".into() } else { t }
}

impl Writer {
    pub fn new(cfg: ClientConfig) -> Result<Writer, CloseError> {
        Ok(Writer {
            reader: Reader::new(cfg)?,
        })
    }
    pub fn reader(&self) -> &Reader {
        &self.reader
    }
    /// Reports every HTTP attempt to `f` (see [`Reader::with_observer`]).
    pub fn with_observer(self, f: CallObserver) -> Writer {
        Writer {
            reader: self.reader.with_observer(f),
        }
    }
    async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, CloseError> {
        self.reader
            .call(method, path, Some(&Value::Object(body.clone())))
            .await
    }
    pub async fn create_lead(&self, body: &Map<String, Value>) -> Result<Value, CloseError> {
        self.write(reqwest::Method::POST, "lead/", body).await
    }
    pub async fn create_contact(&self, body: &Map<String, Value>) -> Result<Value, CloseError> {
        self.write(reqwest::Method::POST, "contact/", body).await
    }
    pub async fn update_lead(
        &self,
        id: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, CloseError> {
        self.write(reqwest::Method::PUT, &format!("lead/{id}/"), body)
            .await
    }
    pub async fn update_contact(
        &self,
        id: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, CloseError> {
        self.write(reqwest::Method::PUT, &format!("contact/{id}/"), body)
            .await
    }
}
