//! The Close API client: HTTP Basic with one of the organisation's keys, timeouts, pacing per key
//! and endpoint group and for the organisation, retries with backoff and jitter. Reading and writing are separate types, so code that only holds a
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

use crate::errors::cause;
pub use crate::errors::{CloseError, check_base_url, shown_url};

#[derive(Clone)]
pub struct ClientConfig {
    pub base_url: String,
    /// One organisation's keys, never empty, no two alike: requests are spread over them.
    api_keys: Vec<SecretString>,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
    pub backoff: Backoff,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
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
            api_keys: vec![api_key],
            timeout: Duration::from_secs(30),
            max_attempts: 6,
            max_age: Duration::from_secs(120),
            backoff: Backoff::default(),
        }
    }

    /// More keys of the same organisation (a key given twice counts once).
    pub fn with_more_keys(mut self, keys: impl IntoIterator<Item = SecretString>) -> Self {
        for k in keys {
            if !self
                .api_keys
                .iter()
                .any(|have| have.expose_secret() == k.expose_secret())
            {
                self.api_keys.push(k);
            }
        }
        self
    }

    /// How many keys requests are spread over.
    pub fn key_count(&self) -> usize {
        self.api_keys.len()
    }

    /// Key `i` as messages name it: never the key itself.
    fn key_name(&self, i: usize) -> String {
        if self.api_keys.len() == 1 {
            "the API key".into()
        } else {
            format!("API key {} of {}", i + 1, self.api_keys.len())
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
    /// Which of the configured keys authenticated it (its place in the list, from 0).
    pub key: usize,
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

/// A request the pacer let out, until its reply (or its failure) arrives; settled however the
/// attempt ends, even when the call is dropped half-way.
struct InFlight<'a> {
    pacer: &'a Pacer,
    group: &'a str,
    key: usize,
    open: bool,
}

impl InFlight<'_> {
    fn settle(&mut self) {
        if std::mem::take(&mut self.open) {
            self.pacer.settle(self.key, self.group);
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.settle();
    }
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
        let keys = cfg.api_keys.len();
        Ok(Reader {
            http,
            cfg: Arc::new(cfg),
            pacer: Arc::new(Pacer::new(keys)),
            stats: Arc::new(Stats::default()),
            observer: None,
            types: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// What is left of each endpoint group's rate-limit budget, as far as replies told it.
    pub fn budgets(&self) -> Vec<crate::ratelimit::BudgetView> {
        self.pacer.budgets()
    }

    /// Reports every HTTP attempt (group, status, round-trip time) to `f`.
    pub fn with_observer(mut self, f: CallObserver) -> Reader {
        self.observer = Some(f);
        self
    }

    fn observe(&self, group: &str, key: usize, status: Option<u16>, sent: Instant) {
        if let Some(f) = &self.observer {
            f(&CallRecord {
                group,
                key,
                status,
                elapsed: sent.elapsed(),
            });
        }
    }

    /// `GET /me/` with every key: fails fast with [`CloseError::Unauthorized`] on a wrong key
    /// (naming which of a list, never the key), and with [`CloseError::Unreachable`] at once
    /// when nothing listens at the URL (no retries: a run should stop with one clear error, not
    /// try every event).
    pub async fn check_credentials(&self) -> Result<(), CloseError> {
        for key in 0..self.cfg.api_keys.len() {
            self.call_with(reqwest::Method::GET, "me/?_fields=id", None, Some(key))
                .await?;
        }
        Ok(())
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CloseError> {
        self.call_with(method, path, body, None).await
    }

    /// One call, with the key the pacer picks; `only` checks one key instead, and fails fast.
    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        only: Option<usize>,
    ) -> Result<Value, CloseError> {
        let fail_fast = only.is_some();
        use std::sync::atomic::Ordering::Relaxed;
        let url = format!("{}{}", self.cfg.base_url, path);
        let group = ratelimit::group(method.as_str(), path);
        let started = Instant::now();
        let mut attempt = 0u32;
        // Since the previous attempt's reply (or the call's start): pacing and backoff waits.
        let mut idle_from = Instant::now();
        let journal = |status: Option<u16>, sent: Instant, attempt: u32, idle_from: Instant| {
            crate::calls::record(|| crate::calls::Call {
                group: group.clone(),
                method: method.to_string(),
                path: path.split('?').next().unwrap_or_default().to_string(),
                status,
                ms: sent.elapsed().as_millis() as u64,
                attempt,
                waited_ms: sent.saturating_duration_since(idle_from).as_millis() as u64,
                shared_by: None,
            });
        };
        loop {
            let reserved = match only {
                Some(k) => self.pacer.reserve_key(&group, k),
                None => self.pacer.reserve(&group),
            };
            let key = match reserved {
                Ok(k) => k,
                Err(wait) => {
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let mut flight = InFlight {
                pacer: &self.pacer,
                group: &group,
                key,
                open: true,
            };
            attempt += 1;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .basic_auth(self.cfg.api_keys[key].expose_secret(), Some(""));
            if let Some(b) = body {
                req = req.json(b);
            }
            self.stats.requests.fetch_add(1, Relaxed);
            let sent = Instant::now();
            // Network errors, timeouts and lost replies never carry credentials in their
            // message (the key travels in a header, not the URL).
            let reply = req.send().await;
            flight.settle();
            let (status, headers, text) = match reply {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match resp.text().await {
                        Ok(t) => {
                            self.observe(&group, key, Some(status), sent);
                            journal(Some(status), sent, attempt, idle_from);
                            idle_from = Instant::now();
                            (status, headers, t)
                        }
                        Err(e) => {
                            self.observe(&group, key, None, sent);
                            journal(None, sent, attempt, idle_from);
                            idle_from = Instant::now();
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
                    self.observe(&group, key, None, sent);
                    journal(None, sent, attempt, idle_from);
                    idle_from = Instant::now();
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
                self.pacer.observe(key, &group, rl, status != 429);
            }
            let retry_after = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .or(rl.filter(|_| status == 429).map(|r| r.reset))
                .map(|s| Duration::from_secs_f64(s.max(0.0)));
            if status == 429 {
                self.stats.throttled.fetch_add(1, Relaxed);
                self.pacer.block(
                    key,
                    &group,
                    retry_after.unwrap_or(Duration::from_secs(1)),
                    rl,
                );
            }
            match classify(status, retry_after) {
                RetryAction::Successful => {
                    return serde_json::from_str(&text).map_err(|e| CloseError::BadReply {
                        path: path.to_string(),
                        message: format!("not JSON ({e})"),
                    });
                }
                RetryAction::DontRetry if status == 401 || status == 403 => {
                    return Err(CloseError::Unauthorized {
                        status,
                        key: self.cfg.key_name(key),
                    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    /// A simulator on loopback with `keys` (one organisation) and 4 searches per key per half
    /// second: the organisation gets 12.
    async fn sim(keys: &[&str]) -> String {
        let sim = closeflow_sim::Sim::from_snapshot(Some(&json!({
            "api_keys": keys,
            "limits": {"search": 4, "window_secs": 0.5},
        })))
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(closeflow_sim::serve(listener, sim));
        format!("http://{addr}/api/v1/")
    }

    fn config(url: &str, keys: &[&str]) -> ClientConfig {
        let secret = |k: &&str| SecretString::from(k.to_string());
        ClientConfig::new(url, secret(&keys[0])).with_more_keys(keys[1..].iter().map(secret))
    }

    /// `n` searches from `workers` concurrent callers; the requests each key authenticated,
    /// and the 429s seen.
    async fn searches(url: &str, keys: &[&str], n: usize, workers: usize) -> (Vec<u64>, u64) {
        let used = Arc::new(Mutex::new(vec![0u64; keys.len()]));
        let seen = used.clone();
        let r = Reader::new(config(url, keys))
            .unwrap()
            .with_observer(Arc::new(move |c: &CallRecord<'_>| {
                seen.lock().unwrap()[c.key] += 1;
            }));
        let body = json!({"query": {"type": "and", "queries": [{"type": "object_type", "object_type": "lead"}]}});
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let (r, body, next) = (r.clone(), body.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                    r.call(reqwest::Method::POST, "data/search/", Some(&body))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let throttled = r.stats.throttled.load(std::sync::atomic::Ordering::Relaxed);
        let used = used.lock().unwrap().clone();
        assert_eq!(used.iter().sum::<u64>(), n as u64 + throttled);
        (used, throttled)
    }

    /// The 429s the simulator gave, as it counted them.
    async fn sim_429s(url: &str) -> u64 {
        let origin = url.trim_end_matches("api/v1/");
        let stats: Value = reqwest::get(format!("{origin}_sim/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        stats["search"]["throttled"].as_u64().unwrap()
    }

    #[tokio::test]
    async fn searches_are_spread_over_three_keys_without_a_429() {
        let keys = ["k1", "k2", "k3"];
        let url = sim(&keys).await;
        let (used, throttled) = searches(&url, &keys, 36, 3).await;
        assert_eq!((throttled, sim_429s(&url).await), (0, 0), "{used:?}");
        // Every key carried its share (a third each, give or take the first turns).
        assert!(used.iter().all(|n| *n >= 8), "{used:?}");
    }

    #[tokio::test]
    async fn one_key_stays_paced() {
        let url = sim(&["k1"]).await;
        let (used, throttled) = searches(&url, &["k1"], 12, 3).await;
        assert_eq!((used, throttled, sim_429s(&url).await), (vec![12], 0, 0));
    }

    #[tokio::test]
    async fn keys_beyond_three_are_held_to_the_organisations_budget() {
        // Six keys paced each on its own would send 18 a window; the organisation takes 12.
        let keys = ["k1", "k2", "k3", "k4", "k5", "k6"];
        let url = sim(&keys).await;
        let (used, throttled) = searches(&url, &keys, 36, 6).await;
        assert_eq!((throttled, sim_429s(&url).await), (0, 0), "{used:?}");
        assert!(used.iter().all(|n| *n > 0), "{used:?}");
    }

    #[tokio::test]
    async fn a_rejected_key_is_named_by_its_place_never_shown() {
        let url = sim(&["k_good"]).await;
        let cfg = config(&url, &["k_good", "k_BAD_S3CRET", "k_good"]);
        assert_eq!(cfg.key_count(), 2, "a repeat counts once");
        assert!(!format!("{cfg:?}").contains("k_"), "{cfg:?}");
        let r = Reader::new(cfg).unwrap();
        assert!(!format!("{r:?}").contains("k_"), "{r:?}");
        let e = r.check_credentials().await.unwrap_err();
        let port = closeflow_close::port::PortError::from(e.clone());
        let shown = format!("{e} {e:?} {port} {port:?}");
        assert!(
            matches!(&e, CloseError::Unauthorized { status: 401, key } if key == "API key 2 of 2"),
            "{shown}"
        );
        assert!(!shown.contains("k_"), "{shown}");
    }
}
