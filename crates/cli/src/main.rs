//! `closeflow`: the command line. Thin: parse arguments, call the engine and the action core,
//! render results.
#![forbid(unsafe_code)]

/// `print!`/`println!` that end the program quietly when standard output is closed (as by
/// `| head`) instead of panicking.
macro_rules! out {
    ($($t:tt)*) => { $crate::emit(format_args!($($t)*), false) };
}
macro_rules! outln {
    ($($t:tt)*) => { $crate::emit(format_args!($($t)*), true) };
}

mod against;
mod capture;
mod diff;
mod diff_view;
mod dlq;
mod duration;
mod eval;
mod explain;
mod git_base;
mod input;
mod json_doc;
mod lookups;
use closeflow_close_tools::plan_view;
mod render;
mod resume;
mod runs;
mod serve;
mod sim;
mod stream;
mod test_diff;
mod tests_cmd;
mod trace;
mod validate;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc rather than the system allocator: a snapshot dry-run holds a large, long-lived
/// heap and churns small records per event, where glibc's malloc spends its time
/// consolidating free chunks (measured: planning slowed with snapshot size).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "closeflow",
    version,
    about = "A self-hosted Close CRM destination for Segment-format events"
)]
struct Cli {
    /// Never colour the output (also: NO_COLOR set in the environment).
    #[arg(long, global = true)]
    no_color: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check instance files and their mapping tests: every problem of every file, at once.
    Validate {
        /// Instance files, or directories holding them (*.yaml, *.yml); an instance's tests
        /// (`NAME.test.yaml` beside it) are checked with it.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Also check lead status ids, custom field ids and literal custom field values against
        /// a Close organisation: `sim:STATE.json` (a simulator snapshot) or `close` (the
        /// instance's endpoint or --close-url, read-only).
        #[arg(long)]
        against: Option<String>,
        /// The Close API base URL for `--against close` (overrides the instance's endpoint).
        #[arg(long, env = "CLOSEFLOW_CLOSE_URL", value_parser = close_url)]
        close_url: Option<String>,
    },
    /// Run mapping tests (*.test.yaml); a diff for each failure, exit 1 on any.
    Test {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// JSON lines in, JSON lines out: trigger and mapping evaluation for scripts and editors.
    Eval,
    /// For one event: each mapping's trigger verdict, condition by condition, and the payload.
    Explain {
        #[arg(long)]
        instance: PathBuf,
        /// The event: a JSON file, `-` for standard input, or the JSON itself.
        event: String,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
    /// The plan for a stream of events, without writing (read-only against Close or a snapshot).
    DryRun {
        #[arg(long)]
        instance: PathBuf,
        /// A JSON-lines file, a JSON array file, or `-` for standard input.
        #[arg(default_value = "-")]
        events: String,
        /// Plan against a simulator snapshot instead of live Close: `sim:STATE.json`.
        #[arg(long)]
        against: Option<String>,
        /// The Close API base URL, for every instance (overrides the instance's endpoint).
        #[arg(long, env = "CLOSEFLOW_CLOSE_URL", value_parser = close_url)]
        close_url: Option<String>,
        #[arg(long, value_enum, default_value = "human")]
        format: runs::PlanFormat,
        /// Exit 2 when something would change (as terraform does).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// What a mapping change does to real events: every event through both versions.
    #[command(group(clap::ArgGroup::new("old_version").required(true).args(["old", "base"])))]
    Diff {
        /// The new version: an instance file, or a directory of them (repeatable).
        #[arg(long, required = true)]
        new: Vec<PathBuf>,
        /// The old version: an instance file, or a directory of them (repeatable).
        #[arg(long)]
        old: Vec<PathBuf>,
        /// Take the old version from this git revision, at the same paths as --new.
        #[arg(long, value_name = "REV")]
        base: Option<String>,
        /// JSON-lines files, JSON array files, or `-` for standard input (as dry-run reads).
        #[arg(default_value = "-")]
        events: Vec<String>,
        /// Compare plans too: against a simulator snapshot (`sim:STATE.json`) or live Close
        /// read-only (`close`).
        #[arg(long)]
        against: Option<String>,
        /// The Close API base URL, for `--against close`.
        #[arg(long, env = "CLOSEFLOW_CLOSE_URL", value_parser = close_url)]
        close_url: Option<String>,
        #[arg(long, value_enum, default_value = "human")]
        format: diff::DiffFormat,
        /// Exit 2 when anything changes.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Example events (and value pairs) shown per kind of change.
        #[arg(long, default_value_t = 3)]
        limit: usize,
    },
    /// Apply the plan for a stream of events (a backfill).
    Send {
        #[arg(long)]
        instance: PathBuf,
        #[arg(default_value = "-")]
        events: String,
        /// The Close API base URL (overrides the instance's endpoint).
        #[arg(long, env = "CLOSEFLOW_CLOSE_URL", value_parser = close_url)]
        close_url: Option<String>,
        /// Skip events already applied (by messageId) by this instance to this Close, as
        /// recorded in the resume file; what was skipped, and why, is reported at the end.
        #[arg(long)]
        resume: bool,
        /// Where applied messageIds are recorded. Default: in the current directory, named after
        /// the instance and the endpoint, `.closeflow-send-INSTANCE-HOST_PORT_PATH.done`.
        #[arg(long)]
        resume_file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "human")]
        format: runs::PlanFormat,
        /// Events read ahead whose lookups go out together before they are applied in order.
        #[arg(long, default_value_t = 100)]
        lookahead: usize,
        #[command(flatten)]
        lookups: lookups::LookupArgs,
    },
    /// The ingestion server: Segment-compatible intake, durable queue, delivery to Close.
    Serve(serve::ServeArgs),
    /// An instance's recently accepted events from the server's queue, as JSON lines.
    Capture(capture::CaptureArgs),
    /// The server's dead-letter store: list, show, replay, drop.
    #[command(subcommand)]
    Dlq(dlq::DlqCmd),
    /// What happened to an event, or to every event of a person: received, each mapping's
    /// verdict, the payload, the plan, each Close call and the outcome (exit 3: none found).
    Trace(trace::TraceArgs),
    /// Run the Close simulator on 127.0.0.1 for local trials.
    #[command(after_help = sim::HELP)]
    Sim {
        /// A snapshot to start from (the simulator's JSON state format).
        #[arg(long)]
        state: Option<PathBuf>,
        /// The port to listen on; 0 picks a free one (the start-up line says which).
        #[arg(long, default_value_t = 9000)]
        port: u16,
        /// Write the state to this file (snapshot format) when stopped (Ctrl-C or SIGTERM).
        #[arg(long)]
        save: Option<PathBuf>,
    },
}

/// `--close-url` must be an http(s) URL with a host.
fn close_url(s: &str) -> Result<String, String> {
    closeflow_mapping::instance::check_url(s)
        .map(|()| s.to_string())
        .map_err(|why| format!("not a usable URL: {why}"))
}

pub fn emit(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = r {
        exit_on_closed_pipe(&e);
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Standard output, buffered, for a document written as it goes (`--format json`).
pub fn stdout_buffered() -> std::io::BufWriter<std::io::StdoutLock<'static>> {
    std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock())
}

/// A failed write to standard output: a reader that went away ends the run quietly (as
/// [`emit`] does); another failure is an error.
pub fn stdout_failed(e: std::io::Error) -> anyhow::Error {
    exit_on_closed_pipe(&e);
    anyhow::Error::new(e).context("cannot write to standard output")
}

/// A reader that went away (`| head`) is not an error worth a message.
fn exit_on_closed_pipe(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
}

pub fn color_enabled(no_color: bool) -> bool {
    use std::io::IsTerminal;
    !no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = color_enabled(cli.no_color);
    let result = match cli.cmd {
        Cmd::Validate {
            paths,
            format,
            deny_warnings,
            against,
            close_url,
        } => validate::run(validate::Validate {
            paths: &paths,
            format,
            deny_warnings,
            against: against.as_deref(),
            close_url: close_url.as_deref(),
            color,
        }),
        Cmd::Eval => eval::run(),
        Cmd::Test { paths } => tests_cmd::run(&paths, color),
        Cmd::Explain {
            instance,
            event,
            format,
        } => explain::run(&instance, &event, format, color),
        Cmd::DryRun {
            instance,
            events,
            against,
            close_url,
            format,
            detailed_exitcode,
        } => runs::dry_run(runs::DryRun {
            instance: &instance,
            events: &events,
            against: against.as_deref(),
            close_url: close_url.as_deref(),
            format,
            detailed_exitcode,
            color,
        }),
        Cmd::Diff {
            new,
            old,
            base,
            events,
            against,
            close_url,
            format,
            detailed_exitcode,
            limit,
        } => diff::run(diff::Diff {
            new: &new,
            old: &old,
            base: base.as_deref(),
            events: &events,
            against: against.as_deref(),
            close_url: close_url.as_deref(),
            format,
            detailed_exitcode,
            limit,
            color,
        }),
        Cmd::Send {
            instance,
            events,
            close_url,
            resume,
            resume_file,
            format,
            lookahead,
            lookups,
        } => runs::send(runs::Send {
            instance: &instance,
            events: &events,
            close_url: close_url.as_deref(),
            resume,
            resume_file,
            format,
            color,
            lookahead,
            lookups,
        }),
        Cmd::Serve(a) => serve::run(a),
        Cmd::Dlq(c) => dlq::run(c),
        Cmd::Trace(a) => trace::run(a),
        Cmd::Capture(a) => capture::run(a),
        Cmd::Sim { state, port, save } => sim::run(state.as_deref(), port, save.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                exit_on_closed_pipe(io);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
