//! A JSON document written as it goes: `{"format_version": 1, …, "events": [ … ], "summary":
//! …}` with each event serialised and written when it is ready and the summary at the end, so
//! that `--format json` holds one event at a time however long the stream. The bytes are those
//! `serde_json::to_string_pretty` gives for the whole document (two-space indentation).

use serde::Serialize;
use serde_json::Value;
use std::io::Write;

pub struct JsonDoc<W: Write> {
    w: W,
    /// The members before `events`, until they are written (with the first event, or at the
    /// end): a run that fails before its first event prints nothing.
    head: Option<Vec<(&'static str, Value)>>,
    events: usize,
    buf: Vec<u8>,
}

/// `v` pretty-printed, each line after the first indented by `indent` spaces: the value as it
/// appears nested in a pretty document. (A JSON string never holds a raw line break, so every
/// `\n` in the text is a line break of the layout.)
fn nested<T: Serialize + ?Sized>(
    w: &mut impl Write,
    buf: &mut Vec<u8>,
    v: &T,
    indent: &[u8],
) -> std::io::Result<()> {
    buf.clear();
    serde_json::to_writer_pretty(&mut *buf, v)?;
    let mut lines = buf.split(|b| *b == b'\n');
    if let Some(first) = lines.next() {
        w.write_all(first)?;
    }
    for line in lines {
        w.write_all(b"\n")?;
        w.write_all(indent)?;
        w.write_all(line)?;
    }
    Ok(())
}

impl<W: Write> JsonDoc<W> {
    /// A document whose members before `events` are `head` (in order).
    pub fn new(w: W, head: Vec<(&'static str, Value)>) -> JsonDoc<W> {
        JsonDoc {
            w,
            head: Some(head),
            events: 0,
            buf: Vec::new(),
        }
    }

    /// Writes the opening and the members before `events`, once.
    fn start(&mut self) -> std::io::Result<()> {
        let Some(head) = self.head.take() else {
            return Ok(());
        };
        self.w.write_all(b"{")?;
        for (k, v) in &head {
            self.w.write_all(b"\n  ")?;
            serde_json::to_writer(&mut self.w, k)?;
            self.w.write_all(b": ")?;
            nested(&mut self.w, &mut self.buf, v, b"  ")?;
            self.w.write_all(b",")?;
        }
        self.w.write_all(b"\n  \"events\": [")?;
        // Once, so that the head shows when the first event is planned (the bench times the
        // load by it), not when the buffer first fills.
        self.w.flush()
    }

    /// Writes one element of `events`.
    pub fn event<T: Serialize>(&mut self, e: &T) -> std::io::Result<()> {
        self.start()?;
        self.w.write_all(if self.events == 0 {
            b"\n    "
        } else {
            b",\n    "
        })?;
        nested(&mut self.w, &mut self.buf, e, b"    ")?;
        self.events += 1;
        Ok(())
    }

    /// Closes `events`, writes `summary` and the end of the document, and flushes.
    pub fn finish<T: Serialize>(mut self, summary: &T) -> std::io::Result<W> {
        self.start()?;
        if self.events > 0 {
            self.w.write_all(b"\n  ")?;
        }
        self.w.write_all(b"],\n  \"summary\": ")?;
        nested(&mut self.w, &mut self.buf, summary, b"  ")?;
        self.w.write_all(b"\n}\n")?;
        self.w.flush()?;
        Ok(self.w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn streamed(events: &[serde_json::Value]) -> String {
        let mut doc = JsonDoc::new(
            Vec::new(),
            vec![
                ("format_version", json!(1)),
                ("plans", json!(false)),
                ("changes", json!([{"name": "m", "status": "kept"}])),
            ],
        );
        for e in events {
            doc.event(e).unwrap();
        }
        String::from_utf8(
            doc.finish(&json!({"events": events.len(), "groups": []}))
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn the_streamed_document_is_byte_for_byte_the_whole_one_pretty_printed() {
        for events in [
            vec![],
            vec![json!({"index": 0, "mappings": []})],
            vec![
                json!({"index": 0, "text": "two\nlines \"quoted\"", "nested": {"a": [1, {"b": {}}]}}),
                json!({"index": 1, "mappings": [{"steps": []}]}),
            ],
        ] {
            let whole = json!({
                "format_version": 1,
                "plans": false,
                "changes": [{"name": "m", "status": "kept"}],
                "events": events,
                "summary": {"events": events.len(), "groups": []},
            });
            let want = serde_json::to_string_pretty(&whole).unwrap() + "\n";
            assert_eq!(streamed(&events), want);
        }
    }
}
