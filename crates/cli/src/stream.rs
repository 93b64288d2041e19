//! Reading events as a stream: JSON lines are read and planned one line at a time (a backfill
//! of millions of events never sits in memory); a JSON array is read whole. A line that is not
//! UTF-8 or not JSON is reported with its number and the stream goes on.

use anyhow::{Context, Result};
use closeflow_mapping::events::{self, Entry};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};

pub struct Events {
    input: Box<dyn BufRead>,
    line: usize,
    pending: VecDeque<Entry>,
    buf: Vec<u8>,
    done: bool,
}

/// Opens `arg` (a file, or `-` for standard input).
pub fn open(arg: &str) -> Result<Events> {
    let input: Box<dyn Read> = if arg == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(arg).with_context(|| format!("cannot read events from {arg}"))?,
        )
    };
    from_reader(input)
}

/// Reads events from any bytes: JSON lines one line at a time, or a JSON array whole.
pub fn from_reader(input: Box<dyn Read>) -> Result<Events> {
    let mut input: Box<dyn BufRead> = Box::new(BufReader::with_capacity(1 << 16, input));
    // A JSON array is recognised by its first non-blank byte.
    let array = loop {
        let buf = input.fill_buf().context("cannot read events")?;
        let Some(first) = buf.iter().position(|b| !b.is_ascii_whitespace()) else {
            if buf.is_empty() {
                break false;
            }
            let n = buf.len();
            input.consume(n);
            continue;
        };
        break buf[first] == b'[';
    };
    let mut ev = Events {
        input,
        line: 0,
        pending: VecDeque::new(),
        buf: Vec::new(),
        done: false,
    };
    if array {
        let mut all = Vec::new();
        ev.input
            .read_to_end(&mut all)
            .context("cannot read events")?;
        let entries = match String::from_utf8(all) {
            Ok(text) => events::parse_stream(&text),
            Err(e) => vec![Entry::Invalid {
                message: format!(
                    "the input is not valid UTF-8 (at byte {})",
                    e.utf8_error().valid_up_to() + 1
                ),
                message_id: None,
            }],
        };
        ev.pending.extend(entries);
        ev.done = true;
    }
    Ok(ev)
}

impl Iterator for Events {
    type Item = Result<Entry>;
    fn next(&mut self) -> Option<Result<Entry>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(Ok(e));
            }
            if self.done {
                return None;
            }
            self.buf.clear();
            match self.input.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line += 1;
                    let mut out = Vec::new();
                    events::parse_line(self.line, &self.buf, &mut out);
                    self.pending.extend(out);
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(anyhow::Error::new(e).context("cannot read events")));
                }
            }
        }
    }
}
