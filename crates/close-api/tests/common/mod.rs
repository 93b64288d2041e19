//! What the live-lookup tests share: an instance of people (identify → contact and lead, keys
//! on `cf_user` and `cf_company`) and a simulator on loopback with one API key, `k`.
#![allow(dead_code)]

use closeflow_close::{run, schema};
use closeflow_close_api::client::{ClientConfig, Writer};
use closeflow_close_api::live::{LiveOptions, LiveSource};
use closeflow_close_api::search::Searcher;
use closeflow_mapping::Instance;

pub const INSTANCE: &str = r#"name: t
endpoint: http://127.0.0.1:9/api/v1/
write_key: wk
settings:
  api_key: k
  contact_custom_field_id_for_user_id: cf_user
  lead_custom_field_id_for_company_id: cf_company
mappings:
  - name: people
    trigger: type = "identify"
    action: create_or_update_contact_and_lead
"#;

pub fn instance() -> Instance {
    let (inst, diags) =
        closeflow_mapping::instance::load("t.yaml", INSTANCE, &schema::destination(), &|_| None);
    inst.unwrap_or_else(|| panic!("{diags:?}"))
}

/// A simulator with the recorded limits, served on loopback: the simulator and its address.
pub async fn sim() -> (closeflow_sim::Sim, std::net::SocketAddr) {
    let sim =
        closeflow_sim::Sim::from_snapshot(Some(&serde_json::json!({"api_keys": ["k"]}))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(closeflow_sim::serve(listener, sim.clone()));
    (sim, addr)
}

/// A writer and live lookups (with `opts`) against the simulator at `addr`: one process.
pub fn process(
    inst: &Instance,
    addr: std::net::SocketAddr,
    opts: LiveOptions,
) -> (Writer, LiveSource) {
    let writer = Writer::new(ClientConfig::new(
        format!("http://{addr}/api/v1/"),
        "k".to_string().into(),
    ))
    .unwrap();
    let source = LiveSource::new(
        Searcher::from(writer.reader().clone()),
        run::key_config(inst),
        opts,
    );
    (writer, source)
}
