//! Logs and metrics, emitted together (vector's internal events): each typed event below logs
//! and counts in one call, so the two never disagree.
//!
//! Counts that must survive a crash (accepted, applied, skipped, dead-lettered, retried,
//! replayed, queue depth) are not kept here: they live in the queue, changed in the same
//! transaction as the event, and `/metrics` renders them from there ([`render_queue`]).
//! Nothing here ever carries a secret: events hold names, codes and counts, never keys.

use closeflow_close_api::client::{CallObserver, CallRecord};
use closeflow_mapping::Diagnostic;
use closeflow_queue::{Delivery, InstanceStats, Outcome, QueueError, now_ms};
use metrics::{counter, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use tracing::{error, info, warn};

pub trait InternalEvent {
    fn emit(self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

pub fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CLOSEFLOW_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,hyper=warn,reqwest=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let _ = match format {
        LogFormat::Json => b.json().flatten_event(true).try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// The process's metrics recorder (installed once).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if a recorder was installed already (tests in one process): then the
        // first one keeps counting and this handle renders nothing, which is harmless.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Prometheus label value escaping (instance names are the user's).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Each instance file there is now, 1 when its text as it is runs: rendered from the registry
/// at every scrape, so a deleted file's series goes away with it.
pub fn render_config_files(files: &[(std::path::PathBuf, bool)]) -> String {
    let mut o = String::from(
        "# HELP closeflow_config_file_valid Whether an instance file's current text is running (1) or refused (0).\n# TYPE closeflow_config_file_valid gauge\n",
    );
    for (f, valid) in files {
        let _ = writeln!(
            o,
            "closeflow_config_file_valid{{file=\"{}\"}} {}",
            esc(&f.display().to_string()),
            u8::from(*valid)
        );
    }
    o
}

/// The durable counts as Prometheus text.
pub fn render_queue(stats: &[InstanceStats]) -> String {
    let mut o = String::new();
    let now = now_ms();
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    type Count = fn(&InstanceStats) -> u64;
    type ByReason = fn(&InstanceStats) -> &Vec<(String, u64)>;
    let simple: [(&str, &str, &str, Count); 7] = [
        (
            "closeflow_events_accepted_total",
            "counter",
            "Events stored durably (after deduplication).",
            |s| s.accepted,
        ),
        (
            "closeflow_events_duplicate_total",
            "counter",
            "Events dropped as duplicates of a messageId seen within the window.",
            |s| s.duplicates,
        ),
        (
            "closeflow_events_applied_total",
            "counter",
            "Events delivered: planned and written (or nothing needed writing).",
            |s| s.applied,
        ),
        (
            "closeflow_events_replayed_total",
            "counter",
            "Dead letters queued again.",
            |s| s.replayed,
        ),
        (
            "closeflow_queue_depth",
            "gauge",
            "Events queued (waiting or in flight).",
            |s| s.queued,
        ),
        (
            "closeflow_dead_letters",
            "gauge",
            "Events in the dead-letter store now.",
            |s| s.dead_now,
        ),
        (
            "closeflow_queue_quarantined_total",
            "counter",
            "Unreadable queue records set aside.",
            |s| s.quarantined,
        ),
    ];
    for (name, kind, help, get) in simple {
        family(&mut o, name, kind, help);
        for s in stats {
            let _ = writeln!(o, "{name}{{instance=\"{}\"}} {}", esc(&s.instance), get(s));
        }
    }
    let by_reason: [(&str, &str, ByReason); 3] = [
        (
            "closeflow_events_skipped_total",
            "Events that needed nothing (no mapping matched, every step skipped by a flag or rule).",
            |s| &s.skipped,
        ),
        (
            "closeflow_events_dead_lettered_total",
            "Events given up and kept in the dead-letter store.",
            |s| &s.dead_lettered,
        ),
        (
            "closeflow_events_retried_total",
            "Failed attempts that will be tried again.",
            |s| &s.retried,
        ),
    ];
    for (name, help, get) in by_reason {
        family(&mut o, name, "counter", help);
        for s in stats {
            for (reason, n) in get(s) {
                let _ = writeln!(
                    o,
                    "{name}{{instance=\"{}\",reason=\"{}\"}} {n}",
                    esc(&s.instance),
                    esc(reason)
                );
            }
        }
    }
    // A shared queue: which node reached each outcome (the totals above are the cluster's).
    if stats.iter().any(|s| !s.by_node.is_empty()) {
        family(
            &mut o,
            "closeflow_node_events_total",
            "counter",
            "Final outcomes and retries by the cluster node that reached them.",
        );
        for s in stats {
            for n in &s.by_node {
                for (outcome, v) in [
                    ("applied", n.applied),
                    ("skipped", n.skipped),
                    ("dead_lettered", n.dead_lettered),
                    ("retried", n.retried),
                ] {
                    let _ = writeln!(
                        o,
                        "closeflow_node_events_total{{instance=\"{}\",node=\"{}\",outcome=\"{outcome}\"}} {v}",
                        esc(&s.instance),
                        esc(&n.node)
                    );
                }
            }
        }
    }
    family(
        &mut o,
        "closeflow_queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest queued event.",
    );
    for s in stats {
        let age = s
            .oldest_queued_at
            .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
        let _ = writeln!(
            o,
            "closeflow_queue_oldest_age_seconds{{instance=\"{}\"}} {age}",
            esc(&s.instance)
        );
    }
    o
}

/// An observer for an instance's Close client: calls, 429s and round-trip time by group.
pub fn close_observer(instance: &str) -> CallObserver {
    let instance = instance.to_string();
    Arc::new(move |r: &CallRecord<'_>| {
        let status = r
            .status
            .map_or_else(|| "network_error".to_string(), |s| s.to_string());
        counter!("closeflow_close_requests_total", "instance" => instance.clone(), "group" => r.group.to_string(), "status" => status).increment(1);
        if r.status == Some(429) {
            counter!("closeflow_close_throttled_total", "instance" => instance.clone(), "group" => r.group.to_string()).increment(1);
        }
        histogram!("closeflow_close_request_duration_seconds", "instance" => instance.clone(), "group" => r.group.to_string())
            .record(r.elapsed.as_secs_f64());
    })
}

/// An intake request refused as a whole, before any event was looked at (auth, size, JSON,
/// back-pressure). Admin refusals are not counted here (`error::AdminRefusal`).
pub struct RequestRejected<'a> {
    pub code: &'a str,
    pub status: u16,
}

impl InternalEvent for RequestRejected<'_> {
    fn emit(self) {
        info!(
            code = self.code,
            status = self.status,
            "intake request refused"
        );
        counter!("closeflow_requests_rejected_total", "reason" => self.code.to_string())
            .increment(1);
    }
}

/// Accepting a connection failed for a reason other than the peer (out of descriptors).
pub struct AcceptFailed<'a> {
    pub error: &'a std::io::Error,
}

impl InternalEvent for AcceptFailed<'_> {
    fn emit(self) {
        error!(error = %self.error, "cannot accept connections; retrying shortly");
        counter!("closeflow_accept_errors_total").increment(1);
    }
}

/// A connection closed at once because `--max-connections` were open.
pub struct ConnectionRefused;

impl InternalEvent for ConnectionRefused {
    fn emit(self) {
        // Counted, not logged one by one: a flood must not become a flood of log lines.
        counter!("closeflow_connections_refused_total").increment(1);
    }
}

pub struct EventsReceived<'a> {
    pub instance: &'a str,
    pub count: usize,
}

impl InternalEvent for EventsReceived<'_> {
    fn emit(self) {
        counter!("closeflow_events_received_total", "instance" => self.instance.to_string())
            .increment(self.count as u64);
    }
}

/// One item of a request refused (the request's other items go on).
pub struct EventRejected<'a> {
    pub instance: &'a str,
    pub code: &'a str,
    pub index: usize,
    pub message: &'a str,
}

impl InternalEvent for EventRejected<'_> {
    fn emit(self) {
        info!(
            instance = self.instance,
            code = self.code,
            index = self.index,
            message = self.message,
            "event refused at intake"
        );
        counter!("closeflow_events_rejected_total", "instance" => self.instance.to_string(), "reason" => self.code.to_string())
            .increment(1);
    }
}

pub struct EventSettled<'a> {
    pub delivery: &'a Delivery,
    pub outcome: &'a Outcome,
}

impl InternalEvent for EventSettled<'_> {
    fn emit(self) {
        let d = self.delivery;
        let latency = (now_ms() - d.received_at).max(0) as f64 / 1000.0;
        match self.outcome {
            Outcome::Applied => {
                info!(instance = %d.instance, message_id = %d.message_id, "event applied");
            }
            Outcome::Skipped { reason } => {
                info!(instance = %d.instance, message_id = %d.message_id, reason = %reason, "event skipped");
            }
            Outcome::Retry { reason, error, .. } => {
                warn!(instance = %d.instance, message_id = %d.message_id, attempt = d.attempts + 1, reason = %reason, error = %error, "delivery failed; will retry");
                return;
            }
            Outcome::Dead { reason, error, .. } => {
                error!(instance = %d.instance, message_id = %d.message_id, reason = %reason, error = %error, "event dead-lettered");
            }
        }
        histogram!("closeflow_delivery_latency_seconds", "instance" => d.instance.clone())
            .record(latency);
    }
}

/// A Close write checked against a lost key hold (see `delivery::fenced`): refused before it
/// went out, or found to have been under way when the hold was lost (it may have landed).
pub struct WriteFenced<'a> {
    pub instance: &'a str,
    pub what: &'static str,
    pub refused: bool,
}

impl InternalEvent for WriteFenced<'_> {
    fn emit(self) {
        let when = if self.refused {
            "refused"
        } else {
            "under_way_at_loss"
        };
        warn!(
            instance = self.instance,
            write = self.what,
            when,
            "a Close write on lost lookup-key locks"
        );
        counter!("closeflow_fenced_writes_total", "instance" => self.instance.to_string(), "when" => when)
            .increment(1);
    }
}

pub struct QueueFailed<'a> {
    pub what: &'static str,
    pub error: &'a QueueError,
}

impl InternalEvent for QueueFailed<'_> {
    fn emit(self) {
        error!(operation = self.what, error = %self.error, "queue operation failed");
        counter!("closeflow_queue_errors_total", "operation" => self.what).increment(1);
    }
}

/// Journey stages that could not be kept (the writer behind, or its store failing): the
/// events themselves are unaffected.
pub struct JourneysLost<'a> {
    pub count: usize,
    pub why: &'a str,
}

impl InternalEvent for JourneysLost<'_> {
    /// Counted every time, logged at most every 10 s: under overload this fires per event,
    /// and a log line each would add to the load that caused it.
    fn emit(self) {
        use std::sync::atomic::{AtomicI64, Ordering};
        static LOGGED: AtomicI64 = AtomicI64::new(0);
        counter!("closeflow_journey_stages_lost_total").increment(self.count as u64);
        let now = now_ms();
        let last = LOGGED.load(Ordering::Relaxed);
        if now - last >= 10_000
            && LOGGED
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(
                stages = self.count,
                why = self.why,
                "journey stages were not kept (logged at most every 10 s; closeflow_journey_stages_lost_total counts every one)"
            );
        }
    }
}

/// The outcome of (re)loading one instance file.
pub enum ConfigLoaded<'a> {
    Loaded {
        file: &'a str,
        instance: &'a str,
        warnings: &'a [Diagnostic],
    },
    Invalid {
        file: &'a str,
        kept: Option<&'a str>,
        diagnostics: &'a [Diagnostic],
    },
    Removed {
        file: &'a str,
        instance: &'a str,
    },
    Unreadable {
        file: &'a str,
        error: &'a str,
    },
    NotAFile {
        file: &'a str,
    },
}

impl InternalEvent for ConfigLoaded<'_> {
    fn emit(self) {
        match self {
            ConfigLoaded::Loaded {
                file,
                instance,
                warnings,
            } => {
                info!(file, instance, "instance loaded");
                for d in warnings {
                    warn!(file, code = d.code, "{d}");
                }
                counter!("closeflow_config_reloads_total", "result" => "loaded").increment(1);
            }
            ConfigLoaded::Invalid {
                file,
                kept,
                diagnostics,
            } => {
                let errors = diagnostics.iter().filter(|d| d.is_error()).count();
                error!(
                    file,
                    kept_running = kept.unwrap_or("nothing"),
                    errors,
                    "instance file is invalid; the previous version keeps running"
                );
                // The same diagnostics `closeflow validate` prints, one log line each.
                for d in diagnostics {
                    if d.is_error() {
                        error!(file, code = d.code, "{d}");
                    } else {
                        warn!(file, code = d.code, "{d}");
                    }
                }
                counter!("closeflow_config_reloads_total", "result" => "invalid").increment(1);
            }
            ConfigLoaded::Removed { file, instance } => {
                warn!(
                    file,
                    instance,
                    "instance file removed: intake closed; queued events are still delivered"
                );
                counter!("closeflow_config_reloads_total", "result" => "removed").increment(1);
            }
            ConfigLoaded::Unreadable { file, error } => {
                error!(file, error, "instance file cannot be read");
                counter!("closeflow_config_reloads_total", "result" => "unreadable").increment(1);
            }
            ConfigLoaded::NotAFile { file } => {
                warn!(
                    file,
                    "named like an instance file but not a file (a directory?): ignored"
                );
            }
        }
    }
}
