//! Running the release `closeflow` as a child, as a user would, and measuring it: wall time,
//! peak resident set (the child's `VmHWM`, sampled from /proc while it runs) and what it wrote
//! to standard output (read, counted and dropped by the bench, as a pipe to a script would).

use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A child's peak resident set, in bytes, from /proc (`None` where /proc is not available).
fn vm_hwm(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub struct Measured {
    /// From start to exit.
    pub secs: f64,
    /// From start to the first line on standard output.
    pub first_line: Option<f64>,
    pub bytes: u64,
    /// Peak resident set (0 where /proc is not available).
    pub peak: u64,
}

/// Runs `bin args…`; exit codes 0 and 2 (changes, with `--detailed-exitcode`) are fine, any
/// other is an error.
pub fn measure<S: AsRef<OsStr>>(bin: &Path, args: &[S]) -> Result<Measured> {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start closeflow")?;
    let pid = child.id();
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let (mut first, mut bytes) = (None, 0u64);
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            if first.is_none() && buf[..n].contains(&b'\n') {
                first = Some(started.elapsed().as_secs_f64());
            }
            bytes += n as u64;
        }
        (first, bytes)
    });
    let mut stderr = child.stderr.take().context("stderr")?;
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut peak = 0;
    let status = loop {
        if let Some(h) = vm_hwm(pid) {
            peak = peak.max(h);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let secs = started.elapsed().as_secs_f64();
    let (first_line, bytes) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread"))?;
    let err = errors.join().unwrap_or_default();
    if !matches!(status.code(), Some(0 | 2)) {
        bail!("closeflow failed ({status}): {err}");
    }
    Ok(Measured {
        secs,
        first_line,
        bytes,
        peak,
    })
}

pub fn mb(b: u64) -> f64 {
    b as f64 / 1_048_576.0
}
