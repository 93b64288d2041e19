//! The router: every route and the layers around them, built from the shared state. Kept apart
//! from the state (`app.rs`) so the route modules depend on the state and nothing depends back.

use crate::app::App;
use crate::{admin, console, intake, ops};
use axum::Router;
use axum::routing::post;
use closeflow_queue::Queue;
use std::sync::Arc;

pub fn router<Q: Queue>(app: Arc<App<Q>>, cors_origins: &intake::cors::Origins) -> Router {
    let mut r = Router::new();
    for (path, kind) in intake::ROUTES {
        let kind = *kind;
        r = r.route(
            path,
            post(move |s, h, b| intake::ingest::<Q>(s, (path, kind), h, b)),
        );
    }
    // CORS on the intake routes only: layered before the admin and ops routes are merged.
    let r = intake::cors::apply(r, cors_origins);
    r.merge(ops::routes::<Q>())
        .merge(admin::routes::<Q>())
        .merge(console::routes::<Q>())
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            admin::guard::<Q>,
        ))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            console::guard::<Q>,
        ))
        .with_state(app)
}
