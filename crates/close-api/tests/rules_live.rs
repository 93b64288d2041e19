//! The planner's rule table (`closeflow-close`'s `tests/rule_table`) end to end: the executor
//! over the HTTP client against the simulator on loopback.

#[path = "../../close/tests/rule_table/mod.rs"]
mod rule_table;

use closeflow_close::payload::Payload;
use closeflow_close::state::State;
use rule_table::*;
use serde_json::json;

/// The same table end to end: the executor against the simulator over loopback HTTP. The plan
/// must be the same, the simulator's state after must be what the plan says, and planning the
/// event again must write nothing.
#[tokio::test]
async fn every_rule_end_to_end_against_the_simulator() {
    use closeflow_close::exec;
    use closeflow_close_api::client::{ClientConfig, Writer};
    use closeflow_close_api::search::Searcher;
    for (name, leads, payload, expect) in table() {
        let snapshot = json!({"api_keys": ["k"], "leads": leads});
        let sim = closeflow_sim::Sim::from_snapshot(Some(&snapshot)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(closeflow_sim::serve(listener, sim.clone()));
        let w = Writer::new(ClientConfig::new(
            format!("http://{addr}/api/v1/"),
            "k".to_string().into(),
        ))
        .unwrap();
        let p = Payload::normalise(payload.as_object().unwrap()).unwrap();
        let before = State::from_snapshot(&sim.snapshot()).unwrap();
        let applied = exec::apply(&Searcher::from(w.reader().clone()), &w, &both(), &p)
            .await
            .unwrap();
        assert_eq!(render(&applied.plan), expect, "rule (live): {name}");
        let mut expected = before.clone();
        expected.apply(&applied.plan);
        let after = State::from_snapshot(&sim.snapshot()).unwrap();
        assert_eq!(view(&after), view(&expected), "rule (state after): {name}");
        let again = exec::apply(&Searcher::from(w.reader().clone()), &w, &both(), &p)
            .await
            .unwrap();
        assert_eq!(
            again.plan.writes().count(),
            0,
            "rule (replay): {name}: {}",
            render(&again.plan)
        );
    }
}
