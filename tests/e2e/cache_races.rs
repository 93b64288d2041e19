//! Races between the live cache, concurrent events and Close, made exact with a proxy in front of
//! the simulator that holds back a search's reply after Close answered it ("answered before a
//! write, received after it"), or answers a PUT that Close carried out with a 502. Found by an
//! adversarial review; each of these failed before the cache was fixed.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use closeflow_close::exec;
use closeflow_close::model::KeyConfig;
use closeflow_close::payload::Payload;
use closeflow_close_api::client::{ClientConfig, Writer};
use closeflow_close_api::live::{LiveOptions, LiveSource};
use closeflow_close_api::search::Searcher;
use closeflow_sim::Sim;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// A proxy in front of the simulator that can hold back the reply of the next search after
/// Close (the simulator) has answered it: "processed before a write, received after it".
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    hold_next_search: AtomicBool,
    search_answered: Notify,
    release: Notify,
    /// PUTs are carried out by Close, but the caller gets a 502 (a gateway timing out).
    fail_puts: AtomicBool,
}

async fn proxy(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let pq = parts
        .uri
        .path_and_query()
        .map(|x| x.as_str().to_string())
        .unwrap_or_default();
    let mut rb = p
        .client
        .request(parts.method.clone(), format!("{}{pq}", p.upstream))
        .body(bytes.to_vec());
    for (k, v) in &parts.headers {
        if k != "host" && k != "content-length" {
            rb = rb.header(k, v);
        }
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    if parts.uri.path().contains("data/search") && p.hold_next_search.swap(false, Ordering::SeqCst)
    {
        p.search_answered.notify_one();
        p.release.notified().await;
    }
    if parts.method == axum::http::Method::PUT && p.fail_puts.load(Ordering::SeqCst) {
        let mut r = Response::new(Body::from("{\"error\": \"bad gateway\"}"));
        *r.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
        return r;
    }
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    for (k, v) in &headers {
        if k != "content-length" && k != "transfer-encoding" {
            r.headers_mut().insert(k, v.clone());
        }
    }
    r
}

struct Running {
    sim: Sim,
    url: String,
    proxy: Arc<Proxy>,
}

async fn start(snapshot: Value) -> Running {
    let (sim, api) = closeflow_e2e::procs::sim_in_process(&snapshot).await;
    let p = Arc::new(Proxy {
        // The proxy forwards each request's own path (`/api/v1/…`) to the simulator's origin.
        upstream: api
            .strip_suffix("/api/v1/")
            .expect("an API base ends in /api/v1/")
            .to_string(),
        client: reqwest::Client::new(),
        hold_next_search: AtomicBool::new(false),
        search_answered: Notify::new(),
        release: Notify::new(),
        fail_puts: AtomicBool::new(false),
    });
    let app = axum::Router::new().fallback(proxy).with_state(p.clone());
    let pl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let paddr = pl.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(pl, app).await });
    Running {
        sim,
        url: format!("http://{paddr}/api/v1/"),
        proxy: p,
    }
}

fn keys() -> KeyConfig {
    KeyConfig {
        company_field: Some("cf_company".into()),
        user_field: Some("cf_user".into()),
    }
}

fn payload(v: Value) -> Payload {
    Payload::normalise(v.as_object().unwrap()).unwrap()
}

fn live(r: &Running, opts: LiveOptions) -> (Writer, LiveSource) {
    let mut cfg = ClientConfig::new(&r.url, "test_key".to_string().into());
    cfg.backoff.base = Duration::from_millis(5);
    let w = Writer::new(cfg).unwrap();
    let s = LiveSource::new(Searcher::from(w.reader().clone()), keys(), opts);
    (w, s)
}

fn org() -> Value {
    let contact = |id: &str, email: &str, user: &str, date: &str| {
        json!({"id": id, "lead_id": "lead_1", "name": id, "title": "Engineer", "date_created": date,
               "emails": [{"email": email, "type": "office"}], "custom.cf_user": user})
    };
    json!({"api_keys": ["test_key"],
    "custom_fields": {"lead": [{"id": "cf_company", "name": "Company ID", "type": "text"},
                               {"id": "cf_tags", "name": "Tags", "type": "text"}],
                      "contact": [{"id": "cf_user", "name": "User ID", "type": "text"}]},
    "lead_statuses": [{"id": "stat_potential", "label": "Potential"}],
    "limits": {"search": 1000, "other": 1000, "window_secs": 1.0},
    "leads": [
      {"id": "lead_1", "name": "Acme", "date_created": "2026-01-01T00:00:00+00:00",
       "custom.cf_company": "c_1", "custom.cf_tags": ["a", "b"],
       "contacts": [contact("cont_1", "ada@acme.com", "u_1", "2026-01-01T00:00:01+00:00"),
                    contact("cont_5", "bob@acme.com", "u_5", "2026-01-01T00:00:02+00:00")]}
    ]})
}

fn contact(st: &Value, id: &str) -> Value {
    st["leads"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["contacts"].as_array().unwrap().iter())
        .find(|c| c["id"] == id)
        .unwrap()
        .clone()
}

/// A look-ahead search (send's prefetch) that Close answered before another event's write, but
/// whose reply arrives after that write: the cache keeps the written record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_answered_before_a_write_must_not_overwrite_the_written_record() {
    let r = start(org()).await;
    let (w, src) = live(
        &r,
        LiveOptions {
            coalesce_window: Duration::ZERO,
            ..LiveOptions::default()
        },
    );
    r.proxy.hold_next_search.store(true, Ordering::SeqCst);
    let pre = {
        let src = src.clone();
        tokio::spawn(async move {
            src.prefetch(&[payload(json!({"contact_external_id": "u_1"}))])
                .await;
        })
    };
    r.proxy.search_answered.notified().await;
    // Meanwhile an event that knows Ada by email changes her title.
    exec::apply(
        &src,
        &w,
        &keys(),
        &payload(json!({"contact_email": "ada@acme.com", "contact_title": "CTO"})),
    )
    .await
    .unwrap();
    assert_eq!(contact(&r.sim.snapshot(), "cont_1")["title"], "CTO");
    r.proxy.release.notify_one();
    pre.await.unwrap();
    // The next event (by User ID) sets it back: one after the other, Close ends at "Engineer".
    let back = exec::apply(
        &src,
        &w,
        &keys(),
        &payload(json!({"contact_external_id": "u_1", "contact_title": "Engineer"})),
    )
    .await
    .unwrap();
    assert_eq!(
        contact(&r.sim.snapshot(), "cont_1")["title"],
        "Engineer",
        "planned from the pre-write record: {:?}",
        back.plan.steps
    );
}

/// Same race, list field: the phone the first event added is kept by the second event's
/// whole-list write (planned from a stale reply, that write would erase it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_search_reply_does_not_make_a_later_event_erase_a_phone() {
    let r = start(org()).await;
    let (w, src) = live(
        &r,
        LiveOptions {
            coalesce_window: Duration::ZERO,
            ..LiveOptions::default()
        },
    );
    r.proxy.hold_next_search.store(true, Ordering::SeqCst);
    let pre = {
        let src = src.clone();
        tokio::spawn(async move {
            src.prefetch(&[payload(json!({"contact_external_id": "u_1"}))])
                .await;
        })
    };
    r.proxy.search_answered.notified().await;
    exec::apply(
        &src,
        &w,
        &keys(),
        &payload(json!({"contact_email": "ada@acme.com", "contact_phone": "+15550001"})),
    )
    .await
    .unwrap();
    r.proxy.release.notify_one();
    pre.await.unwrap();
    exec::apply(
        &src,
        &w,
        &keys(),
        &payload(json!({"contact_external_id": "u_1", "contact_phone": "+15550002"})),
    )
    .await
    .unwrap();
    let phones: Vec<String> = contact(&r.sim.snapshot(), "cont_1")["phones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phone"].as_str().unwrap().to_string())
        .collect();
    assert!(
        phones.iter().any(|p| p.ends_with("0001")) && phones.iter().any(|p| p.ends_with("0002")),
        "both phones must be kept, Close has {phones:?}"
    );
}

/// A record read with fewer custom fields (another key reaching the same lead) must not serve an
/// event that needs the field it was not read with.
#[tokio::test]
async fn a_cached_lead_read_with_fewer_fields_must_not_drop_a_multi_value_list() {
    let r = start(org()).await;
    let (w, src) = live(
        &r,
        LiveOptions {
            coalesce_window: Duration::ZERO,
            ..LiveOptions::default()
        },
    );
    let add = |tag: &str| {
        payload(json!({"contact_email": "ada@acme.com",
                       "lead_custom_fields": {"cf_tags.add": [tag]}}))
    };
    exec::apply(&src, &w, &keys(), &add("c")).await.unwrap();
    // Bob works at the same company; his event reads lead_1 without cf_tags.
    exec::apply(
        &src,
        &w,
        &keys(),
        &payload(json!({"contact_email": "bob@acme.com", "contact_title": "CTO"})),
    )
    .await
    .unwrap();
    let again = exec::apply(&src, &w, &keys(), &add("d")).await.unwrap();
    let st = r.sim.snapshot();
    let tags = st["leads"][0]["custom.cf_tags"].clone();
    assert_eq!(
        tags,
        json!(["a", "b", "c", "d"]),
        "plan: {:?}",
        again.plan.steps
    );
}

/// Control for the test above: with the cache off the same events keep the list.
#[tokio::test]
async fn control_without_cache_the_list_is_kept() {
    let r = start(org()).await;
    let (w, src) = live(
        &r,
        LiveOptions {
            coalesce_window: Duration::ZERO,
            ttl: Duration::ZERO,
            empty_ttl: Duration::ZERO,
            ..LiveOptions::default()
        },
    );
    let add = |tag: &str| {
        payload(json!({"contact_email": "ada@acme.com",
                       "lead_custom_fields": {"cf_tags.add": [tag]}}))
    };
    exec::apply(&src, &w, &keys(), &add("c")).await.unwrap();
    exec::apply(
        &src,
        &w,
        &keys(),
        &payload(json!({"contact_email": "bob@acme.com", "contact_title": "CTO"})),
    )
    .await
    .unwrap();
    exec::apply(&src, &w, &keys(), &add("d")).await.unwrap();
    assert_eq!(
        r.sim.snapshot()["leads"][0]["custom.cf_tags"],
        json!(["a", "b", "c", "d"])
    );
}

/// A cached "nobody has this email" is trusted for two seconds at most: a person created by
/// another writer (the server while a backfill runs, Close's UI) after that is found, not
/// created again. (Within those seconds the race is the one every lookup-then-create has.)
#[tokio::test]
async fn a_cached_miss_is_trusted_for_two_seconds_at_most() {
    let r = start(org()).await;
    let (w_send, send_src) = live(&r, LiveOptions::default());
    let (w_serve, serve_src) = live(&r, LiveOptions::default());
    let grace = || payload(json!({"contact_email": "grace@hopper.dev", "contact_name": "Grace"}));
    // send reads ahead: grace's event is further down the file.
    send_src.prefetch(&[grace()]).await;
    // Another writer of the same organisation creates her.
    exec::apply(&serve_src, &w_serve, &keys(), &grace())
        .await
        .unwrap();
    tokio::time::sleep(LiveOptions::default().empty_ttl + Duration::from_millis(200)).await;
    // send reaches her event.
    let p = exec::apply(&send_src, &w_send, &keys(), &grace())
        .await
        .unwrap();
    let st = r.sim.snapshot();
    let n = st["leads"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["contacts"].as_array().unwrap().iter())
        .filter(|c| c.to_string().contains("grace@hopper.dev"))
        .count();
    assert_eq!(n, 1, "duplicate contact; send's plan: {:?}", p.plan.steps);
}

async fn searches(r: &Running) -> u64 {
    let v: Value = reqwest::get(r.url.replace("api/v1/", "_sim/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["search"]["requests"].as_u64().unwrap_or(0)
}

/// Eight people of one company change their titles at once. Each event holds its contact and the
/// shared lead; nobody writes the lead, so a release sends no waiter back to search (one search
/// per event at most, not thousands).
async fn eight_title_changes_at_one_company_search_once_each_at_most(opts: LiveOptions) {
    let mut snap = org();
    let contacts: Vec<Value> = (0..8)
        .map(|i| {
            json!({"id": format!("cont_p{i}"), "lead_id": "lead_1", "name": format!("p{i}"),
                   "date_created": "2026-01-01T00:00:03+00:00",
                   "emails": [{"email": format!("p{i}@acme.com"), "type": "office"}]})
        })
        .collect();
    snap["leads"][0]["contacts"] = json!(contacts);
    let r = start(snap).await;
    let (w, src) = live(&r, opts);
    w.reader().field_types().await.unwrap();
    let s0 = searches(&r).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (w, src) = (w.clone(), src.clone());
        tasks.push(tokio::spawn(async move {
            let p =
                payload(json!({"contact_email": format!("p{i}@acme.com"), "contact_title": "New"}));
            exec::apply(&src, &w, &keys(), &p).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let n = searches(&r).await - s0;
    assert!(
        n <= 8,
        "{n} searches for 8 events that never wrote the shared lead"
    );
}

/// With the cache off (as `--cache-ttl 0`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_that_wrote_nothing_send_no_waiter_back_to_search_with_the_cache_off() {
    eight_title_changes_at_one_company_search_once_each_at_most(LiveOptions {
        coalesce_window: Duration::ZERO,
        ttl: Duration::ZERO,
        empty_ttl: Duration::ZERO,
        ..LiveOptions::default()
    })
    .await;
}

/// With the server's defaults (cache on, coalescing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_that_wrote_nothing_send_no_waiter_back_to_search_with_the_defaults() {
    eight_title_changes_at_one_company_search_once_each_at_most(LiveOptions::default()).await;
}

/// An update Close carried out but answered with a 5xx (after the client's retries): what the
/// failing event found is forgotten under every key, so the next event through another key
/// looks Close up and keeps the phone Close applied.
#[tokio::test]
async fn an_update_that_failed_after_close_applied_it_leaves_no_stale_record_under_other_keys() {
    let r = start(org()).await;
    let (w, src) = live(
        &r,
        LiveOptions {
            coalesce_window: Duration::ZERO,
            ..LiveOptions::default()
        },
    );
    // Ada is known by User ID (cached).
    exec::apply(
        &src,
        &w,
        &keys(),
        &payload(json!({"contact_external_id": "u_1", "contact_title": "Engineer"})),
    )
    .await
    .unwrap();
    // An event knowing her by email adds a phone; Close applies it, the gateway answers 502.
    r.proxy.fail_puts.store(true, Ordering::SeqCst);
    let failed = exec::apply(
        &src,
        &w,
        &keys(),
        &payload(json!({"contact_email": "ada@acme.com", "contact_phone": "+15550001"})),
    )
    .await;
    assert!(failed.is_err());
    r.proxy.fail_puts.store(false, Ordering::SeqCst);
    let phones = |st: &Value| -> Vec<String> {
        contact(st, "cont_1")["phones"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["phone"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        phones(&r.sim.snapshot()).len(),
        1,
        "Close did apply the first phone"
    );
    // Next event by User ID adds another phone.
    exec::apply(
        &src,
        &w,
        &keys(),
        &payload(json!({"contact_external_id": "u_1", "contact_phone": "+15550002"})),
    )
    .await
    .unwrap();
    let ph = phones(&r.sim.snapshot());
    assert_eq!(ph.len(), 2, "the phone Close applied was erased: {ph:?}");
}

/// The server's case: two concurrent events reach Ada through different keys. E2's lookup is
/// answered by Close before E1 writes, and arrives after. The hold makes E2 look up again after
/// E1's release, from a cache E2's late reply must not have overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_and_look_up_again_is_not_defeated_by_a_late_search_reply() {
    let r = start(org()).await;
    let (w, src) = live(
        &r,
        LiveOptions {
            coalesce_window: Duration::ZERO,
            ..LiveOptions::default()
        },
    );
    w.reader().field_types().await.unwrap();
    r.proxy.hold_next_search.store(true, Ordering::SeqCst);
    let e2 = {
        let (w, src) = (w.clone(), src.clone());
        tokio::spawn(async move {
            exec::apply(
                &src,
                &w,
                &keys(),
                &payload(json!({"contact_email": "ada@acme.com", "contact_title": "Engineer"})),
            )
            .await
            .unwrap()
        })
    };
    r.proxy.search_answered.notified().await;
    exec::apply(
        &src,
        &w,
        &keys(),
        &payload(json!({"contact_external_id": "u_1", "contact_title": "CTO"})),
    )
    .await
    .unwrap();
    r.proxy.release.notify_one();
    let p2 = e2.await.unwrap();
    // E2 was applied after E1 (it waited for E1's hold and looked up again): its title wins.
    assert_eq!(
        contact(&r.sim.snapshot(), "cont_1")["title"],
        "Engineer",
        "E2 planned from the stale record: {:?}",
        p2.plan.steps
    );
}
