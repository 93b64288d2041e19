//! What each fuzz target asserts about one input: more than "it does not panic", the rules
//! that make the result usable (spans inside the source, results that agree, nothing secret
//! or oversized stored). `cargo fuzz run TARGET` feeds these; the project's tests run every
//! file of `fuzz/corpus/TARGET/` through the same functions on stable (this file is compiled
//! into the test crate too), so each crash found, once its input is added to the corpus, is a
//! regression test.

use closeflow_mapping::events::{self, Entry};
use serde_json::{Value, json};

/// The CLI's own event reader (`dry-run`, `send`, `diff`: bytes in, line by line); only its
/// `from_reader` is used here.
#[allow(dead_code)]
#[path = "../../crates/cli/src/stream.rs"]
mod stream;

/// Events to evaluate parsed triggers and loaded instances against.
fn sample_events() -> [Value; 4] {
    [
        json!({"type": "identify", "userId": "u1", "messageId": "m1",
               "traits": {"email": "a@b.io", "plan": "pro", "company": {"id": "c1", "name": "C"}, "vip": true}}),
        json!({"type": "track", "event": "Signed Up", "properties": {"total": 12.5, "tags": ["a", 1, null]}}),
        json!({"type": "group", "groupId": "g", "traits": {"name": null}}),
        json!({"type": "page", "context": {"traits": {"email": 3}}, "name": ["x"]}),
    ]
}

fn span_ok(src: &str, start: usize, len: usize) -> bool {
    start.checked_add(len).is_some_and(|end| {
        end <= src.len() && src.is_char_boundary(start) && src.is_char_boundary(end)
    })
}

/// The trigger parser: an error points inside the source (the diagnostics underline it); a
/// trigger that parses evaluates without panicking, and `explain` agrees with `matches`.
///
/// A trigger is text in a YAML file the program reads as UTF-8 (it refuses other bytes before
/// any trigger is parsed), so bytes that are not UTF-8 are read lossily rather than thrown
/// away: every input reaches the parser.
pub fn trigger(data: &[u8]) {
    let src = &*String::from_utf8_lossy(data);
    match closeflow_mapping::Trigger::parse(src) {
        Ok(t) => {
            for e in sample_events() {
                assert_eq!(
                    t.matches(&e),
                    t.explain(&e).result,
                    "explain disagrees on {e}"
                );
            }
        }
        Err(e) => {
            assert!(
                span_ok(src, e.start, e.len),
                "span {}+{} outside {src:?}",
                e.start,
                e.len
            );
            assert!(!e.message.is_empty());
        }
    }
}

/// The instance loader: every diagnostic's span is inside the file; an instance comes back
/// exactly when there is no error; a loaded instance evaluates events.
///
/// The program reads an instance file as UTF-8 and refuses other bytes with an error before
/// loading; bytes that are not UTF-8 are read lossily here, so that every input is loaded.
pub fn instance(data: &[u8]) {
    let src = &*String::from_utf8_lossy(data);
    let env = |k: &str| (k == "CLOSE_API_KEY").then(|| "fuzz_key".to_string());
    let (inst, diags) = closeflow_mapping::instance::load(
        "fuzz.yaml",
        src,
        &closeflow_close::schema::destination(),
        &env,
    );
    for d in &diags {
        if let Some(s) = &d.span {
            assert!(span_ok(src, s.offset, s.len), "{d:?} outside the source");
        }
    }
    assert_eq!(
        inst.is_some(),
        !diags.iter().any(|d| d.is_error()),
        "{diags:?}"
    );
    if let Some(i) = inst {
        for e in sample_events() {
            let _ = i.evaluate(&e);
        }
    }
}

/// The event-stream reader (`dry-run`/`send`/`diff` input), on any bytes: the CLI's own reader
/// (`crates/cli/src/stream.rs`, line by line, a line that is not UTF-8 or not JSON an invalid
/// entry and the stream going on) yields every entry as either a checked event (an object with
/// a known type) or an invalid entry with a message; on UTF-8 input read the same way by both
/// (JSON lines, or an array) it reads the very events the whole-text reader reads, with an
/// invalid entry wherever that one has one.
pub fn events(data: &[u8]) {
    let read: Vec<Entry> = stream::from_reader(Box::new(std::io::Cursor::new(data.to_vec())))
        .expect("reading from memory cannot fail")
        .map(|e| e.expect("reading from memory cannot fail"))
        .collect();
    for entry in &read {
        match entry {
            Entry::Event(v) => assert!(
                matches!(events::check(v.clone()), Entry::Event(_)),
                "{v} passed as an event"
            ),
            Entry::Invalid { message, .. } => assert!(!message.is_empty()),
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The whole-text reader recognises an array after any whitespace, the stream after ASCII
    // whitespace (what JSON allows); inputs where they differ are read by different routes.
    let array_text = text.trim_start().starts_with('[');
    let array_stream = data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if array_text != array_stream {
        return;
    }
    let whole = events::parse_stream(text);
    assert_eq!(
        read.len(),
        whole.len(),
        "entries differ: {read:?} / {whole:?}"
    );
    for (a, b) in read.iter().zip(&whole) {
        match (a, b) {
            (Entry::Event(x), Entry::Event(y)) => assert_eq!(x, y),
            (Entry::Invalid { .. }, Entry::Invalid { .. }) => {}
            _ => panic!("the readers disagree: {a:?} / {b:?}"),
        }
    }
}

/// The intake body parser: the first byte picks the route and gzip, the rest is the body.
/// A refusal is a 4xx; every accepted event is stored as a JSON object without the write key,
/// with its `messageId`, and bounded in size (so a small body cannot become a huge queue);
/// every item is accepted or rejected by index, once.
pub fn intake_body(data: &[u8]) {
    use closeflow_server::intake::{self, event::EVENT_LIMIT};
    let Some((&sel, raw)) = data.split_first() else {
        return;
    };
    let route = intake::ROUTES[(sel & 0x7f) as usize % intake::ROUTES.len()].1;
    let encoding = (sel & 0x80 != 0).then_some("gzip");
    let received = jiff::Timestamp::from_second(1_780_000_000).expect("a valid time");
    match intake::parse_request(raw, encoding, route, received) {
        Err(r) => assert!(r.status.is_client_error(), "{r:?}"),
        Ok(p) => {
            let Ok(ev) = p.events else { return };
            assert_eq!(ev.accepted.len() + ev.rejected.len(), ev.count);
            // Items are judged in order, so the rejections come in strictly increasing index
            // order: none twice.
            let seen: Vec<usize> = ev.rejected.iter().map(|r| r.index).collect();
            assert!(
                seen.windows(2).all(|w| w[0] < w[1]),
                "rejections out of index order, or an item rejected twice: {seen:?}"
            );
            assert!(seen.iter().all(|i| *i < ev.count));
            for e in &ev.accepted {
                let v: Value = serde_json::from_str(&e.body).expect("a stored body is JSON");
                assert!(v.is_object());
                assert!(v.get("writeKey").is_none(), "the write key was stored: {v}");
                assert_eq!(v["messageId"].as_str(), Some(e.message_id.as_str()));
                // An item is at most 32 KB; enrichment adds timestamps and may copy
                // `timestamp` into `originalTimestamp`, nothing more.
                assert!(
                    e.body.len() <= 2 * EVENT_LIMIT + 1024,
                    "a {} byte event from a {} byte body",
                    e.body.len(),
                    raw.len()
                );
            }
        }
    }
}
