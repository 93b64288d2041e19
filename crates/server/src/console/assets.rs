//! The console's stylesheet and script, compiled into the binary: no build step, nothing
//! fetched from outside (the CSP allows only these).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = r#"
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dee8; --bg: #f6f7fa; --accent: #2456c7;
        --ok: #17803d; --warn: #a15c00; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: center; gap: 1.5rem; padding: .6rem 1.5rem; background: #fff; border-bottom: 1px solid var(--line); }
.brand { font-weight: 700; }
nav a { margin-right: 1rem; color: var(--muted); text-decoration: none; }
nav a.here { color: var(--fg); font-weight: 600; border-bottom: 2px solid var(--accent); }
form.logout { margin-left: auto; }
main { max-width: 1200px; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
body.bare main { max-width: 520px; margin-top: 4rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 1.6rem; } h3 { font-size: 1rem; margin: .8rem 0 .3rem; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: .85rem; }
pre, textarea, code { font: 13px/1.4 ui-monospace, "SFMono-Regular", Menlo, monospace; }
pre { background: #fff; border: 1px solid var(--line); padding: .6rem; overflow-x: auto; white-space: pre-wrap; word-break: break-word; margin: .3rem 0; }
textarea { width: 100%; min-height: 18rem; padding: .5rem; }
input[type=text], input[type=password], select { padding: .35rem .5rem; font-size: 15px; }
form.login { display: grid; gap: .6rem; }
button { padding: .35rem .9rem; font-size: 14px; cursor: pointer; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem; margin: .8rem 0; }
.stage { border-left: 3px solid var(--line); padding-left: .8rem; margin: .6rem 0; }
.muted, .hint { color: var(--muted); font-size: .9rem; }
.ok { color: var(--ok); } .warn { color: var(--warn); } .bad, .error { color: var(--bad); }
.row { display: flex; gap: 1rem; flex-wrap: wrap; align-items: end; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.inline { display: inline; }
ul.verdicts { list-style: none; padding-left: 1rem; margin: .2rem 0; }
@media (max-width: 900px) { .cols { grid-template-columns: 1fr; } }
"#;

/// Fills the event box from a recent event picked in the playground.
const JS: &str = r#"
document.addEventListener("DOMContentLoaded", function () {
  var pick = document.getElementById("recent");
  var box = document.getElementById("event");
  if (pick && box) {
    pick.addEventListener("change", function () {
      var opt = pick.options[pick.selectedIndex];
      if (opt && opt.dataset.event) { box.value = opt.dataset.event; }
    });
  }
});
"#;

pub async fn serve(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "console.css" => ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response(),
        "console.js" => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            JS,
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
