//! The one error type of the HTTP layer: every refusal, on every route, is a status, a stable
//! code and a sentence, rendered as `{"success": false, "code": …, "error": …}` with a
//! `Retry-After` on a 503, and logged and counted once as it is rendered. Handlers return
//! `Result<_, Refusal>`, so a refusal cannot be sent without being counted.

use crate::telemetry::{self, InternalEvent};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// More fields of the reply's body (e.g. the per-item `rejected` list of a batch).
    pub details: Option<(&'static str, Value)>,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 503: nothing was done, the client should come back.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn with(mut self, field: &'static str, value: Value) -> Refusal {
        self.details = Some((field, value));
        self
    }

    pub fn shutting_down() -> Refusal {
        Refusal::unavailable(
            "shutting_down",
            "the server is shutting down; retry shortly",
        )
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        telemetry::RequestRejected {
            code: self.code,
            status: self.status.as_u16(),
        }
        .emit();
        self.render()
    }
}

impl Refusal {
    /// The reply alone, not logged or counted.
    fn render(self) -> Response {
        let mut body = json!({"success": false, "code": self.code, "error": self.message});
        if let Some((field, value)) = self.details {
            body[field] = value;
        }
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // A full disk frees slowly; anything else (a full share, a restart) in seconds.
            let wait = if self.code == "disk_full" { "30" } else { "5" };
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(wait));
        }
        r
    }
}

/// A refusal on an admin route: the same reply, but not counted with intake's refusals
/// (`closeflow_requests_rejected_total` is what clients sending events were refused), and
/// logged at debug level: the operator asking already sees it.
#[derive(Debug)]
pub struct AdminRefusal(pub Refusal);

impl From<Refusal> for AdminRefusal {
    fn from(r: Refusal) -> AdminRefusal {
        AdminRefusal(r)
    }
}

impl From<closeflow_queue::QueueError> for AdminRefusal {
    fn from(e: closeflow_queue::QueueError) -> AdminRefusal {
        AdminRefusal(e.into())
    }
}

impl IntoResponse for AdminRefusal {
    fn into_response(self) -> Response {
        tracing::debug!(
            code = self.0.code,
            status = self.0.status.as_u16(),
            "admin request refused"
        );
        self.0.render()
    }
}

/// A queue that cannot answer an admin request: 503, the client may come back.
impl From<closeflow_queue::QueueError> for Refusal {
    fn from(e: closeflow_queue::QueueError) -> Refusal {
        Refusal::unavailable("queue_unavailable", e.to_string())
    }
}
