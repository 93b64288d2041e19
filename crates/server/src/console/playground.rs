//! The playground: an instance (or an edited copy of its file: the running configuration is
//! never changed from here), an event pasted or picked from recent ones, and what would happen:
//! each mapping's verdict condition by condition, the payloads, the plan, read-only against the
//! instance's Close (or an empty organisation). With an edited file, what the edit would change
//! on the instance's last captured events (the `diff` review), each version dry-run on its own.

use super::{Access, access, page};
use crate::app::App;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use closeflow_close::overlay::Overlay;
use closeflow_close::port::ReadPort;
use closeflow_close::run::{self, EventReport};
use closeflow_close_api::search::{SearchOptions, Searcher};
use closeflow_close_tools::plan_view;
use closeflow_mapping::events::Entry;
use closeflow_mapping::trigger::Explained;
use closeflow_mapping::{Diagnostic, Instance};
use closeflow_queue::Queue;
use closeflow_queue::journey::{Find, Query as JQuery};
use maud::{Markup, html};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::sync::Arc;

/// Captured events the edit review runs over at most: each is planned twice against the
/// instance's Close, out of the same rate budget as delivery.
const REVIEW_MAX: usize = 50;
/// One playground run at a time in the whole server, for the same reason.
static RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

#[cfg(test)]
mod tests {
    #[test]
    fn hidden_secrets_leave_a_file_that_loads() {
        let src = "name: a\nendpoint: http://127.0.0.1:1/api/v1/\nwrite_key: [wk_s3cret, \"wk_2\"]\nsettings:\n  api_key: k_s3cret\nmappings: []\n";
        let shown = super::hide_secrets(src);
        assert!(
            !shown.contains("s3cret") && !shown.contains("wk_2"),
            "{shown}"
        );
        assert!(shown.contains("(secret)"), "{shown}");
        closeflow_mapping::yaml::parse(&shown).unwrap_or_else(|e| panic!("{e:?}\n{shown}"));
    }
}

#[derive(serde::Deserialize, Default)]
pub struct Form {
    instance: Option<String>,
    message_id: Option<String>,
    yaml: Option<String>,
    event: Option<String>,
    /// `close` (the instance's endpoint, read-only) or `empty` (an organisation with nothing).
    against: Option<String>,
    last: Option<usize>,
    csrf: Option<String>,
}

/// The running file as the page shows it: each secret value replaced by `"(secret)"`, so that
/// the copy still loads (starred-out text is not always YAML: `[**]` is an alias).
fn shown_source(path: &std::path::Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(src) => hide_secrets(&src),
        Err(e) => format!("# cannot read {}: {e}", path.display()),
    }
}

pub(crate) fn hide_secrets(src: &str) -> String {
    let starred = closeflow_mapping::redact::redact(src, &closeflow_close::schema::destination());
    let (a, b) = (src.as_bytes(), starred.as_bytes());
    if a.len() != b.len() {
        return starred;
    }
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < a.len() {
        if a[i] == b[i] {
            // Whole characters: redaction replaces every byte of a character it hides.
            let end = (i + 1..=a.len())
                .find(|&j| src.is_char_boundary(j))
                .unwrap_or(a.len());
            out.push_str(&src[i..end]);
            i = end;
            continue;
        }
        let start = i;
        while i < a.len() && a[i] != b[i] {
            i += 1;
        }
        let quoted = start > 0 && matches!(a[start - 1], b'"' | b'\'');
        out.push_str(if quoted { "(secret)" } else { "\"(secret)\"" });
    }
    out
}

/// `${VAR}` names the running file references: the only ones an edited copy may resolve (an
/// edit must not read the server's other environment variables onto the page).
fn referenced_vars(path: &std::path::Path) -> Vec<String> {
    let src = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut rest = src.as_str();
    while let Some(i) = rest.find("${") {
        rest = &rest[i + 2..];
        if let Some(j) = rest.find('}') {
            // `${VAR:-default}` names VAR.
            let name = rest[..j].split(":-").next().unwrap_or_default();
            out.push(name.trim().to_string());
            rest = &rest[j..];
        }
    }
    out
}

async fn recent<Q: Queue>(app: &App<Q>, instance: &str, n: usize) -> Vec<(String, String)> {
    let since = closeflow_queue::now_ms() - 24 * 3_600_000;
    let mut out: std::collections::VecDeque<(String, String)> = std::collections::VecDeque::new();
    let mut after = 0;
    // Pages through the last day's retained events, keeping the last `n`: at most 10 pages of
    // 1000 (a larger backlog shows its first 10,000), never held all at once.
    for _ in 0..10 {
        let Ok(page) = app.queue.retained(instance, since, after, 1000).await else {
            break;
        };
        let Some(last) = page.last() else { break };
        after = last.id;
        for r in page {
            out.push_back((r.message_id, r.body));
            if out.len() > n {
                out.pop_front();
            }
        }
    }
    out.into_iter().rev().collect()
}

pub async fn form<Q: Queue>(
    State(app): State<Arc<App<Q>>>,
    headers: HeaderMap,
    Query(f): Query<Form>,
) -> Response {
    let s = match access(&app, &headers) {
        Access::In(s) => s,
        Access::Out(r) => return r,
    };
    let mut f = f;
    let names = {
        let mut n = app.registry.all_names();
        n.sort();
        n
    };
    let instance = f
        .instance
        .clone()
        .or_else(|| names.first().cloned())
        .unwrap_or_default();
    if f.event.is_none()
        && let Some(m) = &f.message_id
    {
        app.recorder.flush().await;
        let q = JQuery {
            find: Find::MessageId(m.clone()),
            instance: Some(instance.clone()),
            since: 0,
            limit: 1,
        };
        if let Ok(js) = app.journals.find(&q).await {
            f.event = js
                .iter()
                .flat_map(|j| &j.stages)
                .find_map(|s| s.data.get("event"))
                .map(|e| serde_json::to_string_pretty(e).unwrap_or_default());
        }
    }
    let body = editor(&app, &s.csrf, &names, &instance, &f).await;
    page::full("Playground", "playground", &s, body).into_response()
}

async fn editor<Q: Queue>(
    app: &App<Q>,
    csrf: &str,
    names: &[String],
    instance: &str,
    f: &Form,
) -> Markup {
    let active = app.registry.get(instance);
    let yaml = f.yaml.clone().unwrap_or_else(|| {
        active
            .as_ref()
            .map(|a| shown_source(&a.file))
            .unwrap_or_default()
    });
    let recent = recent(app, instance, 10).await;
    let event = f
        .event
        .clone()
        .or_else(|| recent.first().map(|(_, b)| pretty(b)))
        .unwrap_or_else(|| "{\n  \"type\": \"identify\",\n  \"userId\": \"u-1\",\n  \"traits\": {\"email\": \"ada@example.com\"}\n}".into());
    let against = f.against.clone().unwrap_or_else(|| "close".into());
    html! {
        form.playground method="post" action="/console/playground" {
            input type="hidden" name="csrf" value=(csrf);
            div.row {
                label { "Instance " select name="instance" { @for n in names { option value=(n) selected[n == instance] { (n) } } } }
                label { "Plan against " select name="against" {
                    option value="close" selected[against == "close"] { "the instance's Close (read-only)" }
                    option value="empty" selected[against == "empty"] { "an empty organisation" }
                } }
                label { "Review the edit on the last " input type="text" name="last" size="4" value=(f.last.unwrap_or(20)); " captured events (at most " (REVIEW_MAX) ")" }
                button #run type="submit" { "Run" }
            }
            div.cols {
                div {
                    h2 { "Instance file (a copy: the running one never changes from here)" }
                    textarea #yaml name="yaml" spellcheck="false" { (yaml) }
                    p.hint { "Secrets are shown as \"(secret)\"; planning reads with the running instance's key and endpoint." }
                }
                div {
                    h2 { "Event" }
                    @if !recent.is_empty() {
                        label { "Pick a recent event " select #recent {
                            option value="" { "—" }
                            @for (m, b) in &recent { option value=(m) data-event=(pretty(b)) { (m) } }
                        } }
                    }
                    textarea #event name="event" spellcheck="false" { (event) }
                }
            }
        }
    }
}

fn pretty(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
        .unwrap_or_else(|_| body.to_string())
}

fn tree(e: &Explained) -> Markup {
    html! {
        li {
            @if e.result { span.ok { "✓ " } } @else { span.bad { "✗ " } }
            code { (e.text) }
            @if e.children.is_empty() {
                span.muted { "   (value: " @match (&e.actual, e.missing) { (_, Some(true)) => { "missing" } (Some(v), _) => { (v.to_string()) } _ => {} } ")" }
            } @else {
                ul.verdicts { @for c in &e.children { (tree(c)) } }
            }
        }
    }
}

/// Plans `entry` over one version and renders what `dry-run` would print.
async fn plan_text<R: ReadPort>(
    inst: &Instance,
    reads: &R,
    overlay: &mut Overlay,
    index: usize,
    entry: &Entry,
) -> (EventReport, String) {
    let (r, err) = run::dry_run_checked(inst, reads, overlay, index, entry).await;
    let mut text = plan_view::event(&plan_view::Style { color: false }, &r);
    if let Some(e) = err {
        text.push_str(&format!("(reading Close failed: {e})\n"));
    }
    (r, text)
}

pub async fn run<Q: Queue>(
    State(app): State<Arc<App<Q>>>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<Form>,
) -> Response {
    let s = match super::form_session(&app, &headers, f.csrf.as_deref()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut names = app.registry.all_names();
    names.sort();
    let instance = f.instance.clone().unwrap_or_default();
    let editor = editor(&app, &s.csrf, &names, &instance, &f).await;
    let results = match RUNNING.try_acquire() {
        Ok(_one) => results(&app, &instance, &f).await,
        Err(_) => {
            html! { p.warn role="alert" { "Another playground run is in progress (each reads Close out of delivery's rate budget): try again in a moment." } }
        }
    };
    page::full(
        "Playground",
        "playground",
        &s,
        html! { (editor) section #results { (results) } },
    )
    .into_response()
}

async fn results<Q: Queue>(app: &App<Q>, instance: &str, f: &Form) -> Markup {
    let Some(active) = app.registry.get(instance) else {
        return html! { p.error role="alert" { "No running instance named " code { (instance) } "." } };
    };
    // The edited copy, when the text differs from the running file as shown.
    let shown = shown_source(&active.file);
    let yaml = f.yaml.clone().unwrap_or_else(|| shown.clone());
    let edited = yaml.replace("\r\n", "\n") != shown.replace("\r\n", "\n");
    let (copy, diags): (Option<Instance>, Vec<Diagnostic>) = if edited {
        let allowed = referenced_vars(&active.file);
        // A value that is one of the running instance's secrets (or the admin token) reads as
        // "(secret)" wherever the copy puts it: a copy could name a secret's variable in a
        // plain setting, which the plan prints.
        let mut secrets: Vec<String> = active
            .instance
            .write_keys
            .iter()
            .map(|k| k.expose_secret().to_string())
            .collect();
        for s in active.instance.settings.values() {
            secrets.extend(s.secrets().iter().map(|k| k.expose_secret().to_string()));
        }
        if let Some(t) = &app.admin_token {
            secrets.push(t.expose_secret().to_string());
        }
        let env = move |k: &str| {
            let v = allowed
                .iter()
                .any(|a| a == k)
                .then(|| std::env::var(k).ok())
                .flatten()?;
            Some(
                if secrets
                    .iter()
                    .any(|s| !s.is_empty() && v.contains(s.as_str()))
                {
                    "(secret)".to_string()
                } else {
                    v
                },
            )
        };
        let file = format!("{} (edited copy)", active.file.display());
        closeflow_mapping::instance::load(
            &file,
            &yaml,
            &closeflow_close::schema::destination(),
            &env,
        )
    } else {
        (None, vec![])
    };
    if edited && copy.is_none() {
        return html! {
            h2 { "The edited file does not load" }
            pre.diagnostics.bad { @for d in &diags { (d.to_string()) "\n" } }
        };
    }
    let inst: &Instance = copy.as_ref().unwrap_or(&active.instance);
    let event: Value = match serde_json::from_str(f.event.as_deref().unwrap_or("")) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return html! { p.error role="alert" { "The event must be a JSON object." } },
        Err(e) => return html! { p.error role="alert" { "The event is not JSON: " (e) } },
    };
    let entry = Entry::Event(event.clone());
    let empty = closeflow_close::state::State::default();
    let searcher = Searcher::new(active.writer.reader().clone(), SearchOptions::default());
    let against_close = f.against.as_deref() != Some("empty");
    let (report, plan) = if against_close {
        plan_text(inst, &searcher, &mut Overlay::default(), 0, &entry).await
    } else {
        plan_text(inst, &empty, &mut Overlay::default(), 0, &entry).await
    };
    let review = if edited {
        Some(if against_close {
            review(
                app,
                &active.instance,
                inst,
                &searcher,
                instance,
                f.last.unwrap_or(20),
            )
            .await
        } else {
            review(
                app,
                &active.instance,
                inst,
                &empty,
                instance,
                f.last.unwrap_or(20),
            )
            .await
        })
    } else {
        None
    };
    html! {
        @if edited {
            p.warn { "Results of the edited copy (not running)." }
            // Secrets are starred out in the copy: its literal_secret warnings say nothing.
            @for d in diags.iter().filter(|d| d.code != "literal_secret") { p.warn { (d.to_string()) } }
        }
        h2 { "Verdicts" }
        @for m in &inst.mappings {
            @let why = m.trigger.explain(&event);
            div.mapping data-mapping=(m.name) {
                p { "mapping " strong { (m.name) } ": "
                    @if !m.enabled { span.muted { "disabled" } }
                    @else if why.result { span.ok.verdict { "fires" } } @else { span.muted.verdict { "does not fire" } } }
                ul.verdicts { (tree(&why)) }
                @if let Some(r) = report.mappings.iter().find(|r| r.name == m.name) {
                    @if let Some(p) = &r.payload {
                        details open { summary { "payload (as mapped)" } pre { (serde_json::to_string_pretty(p).unwrap_or_default()) } }
                    }
                    @if let Some(e) = &r.error { p.bad { "error: " (e) } }
                }
            }
        }
        h2 { "Plan" @if against_close { " (read-only against the instance's Close)" } @else { " (against an empty organisation)" } }
        pre #plan.plan { (plan) }
        @if let Some(r) = review { (r) }
    }
}

/// What the edit changes on the instance's last `n` captured events: each event planned by
/// the running version and by the copy, each over its own overlay; the events whose plans
/// differ, both plans shown.
async fn review<Q: Queue, R: ReadPort>(
    app: &App<Q>,
    running: &Instance,
    copy: &Instance,
    reads: &R,
    instance: &str,
    n: usize,
) -> Markup {
    let events = recent(app, instance, n.clamp(1, REVIEW_MAX)).await;
    let (mut old_o, mut new_o) = (Overlay::default(), Overlay::default());
    let mut changed = Vec::new();
    // Oldest first, as they happened: the overlays carry what earlier events would create.
    for (i, (m, body)) in events.iter().rev().enumerate() {
        let entry = match serde_json::from_str::<Value>(body) {
            Ok(v) => Entry::Event(v),
            Err(_) => continue,
        };
        let (_, before) = plan_text(running, reads, &mut old_o, i, &entry).await;
        let (_, after) = plan_text(copy, reads, &mut new_o, i, &entry).await;
        if before != after {
            changed.push((m.clone(), before, after));
        }
    }
    html! {
        h2 { "What the edit would change" }
        p.review-summary { (changed.len()) " of the last " (events.len()) " captured event(s) would be handled differently." }
        @for (m, before, after) in &changed {
            div.card.changed {
                p { "event " code { (m) } }
                div.cols {
                    div { p.muted { "running version" } pre { (before) } }
                    div { p.muted { "edited copy" } pre { (after) } }
                }
            }
        }
    }
}
