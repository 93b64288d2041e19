//! The HTTP client as the action core's write port, and its errors in the core's terms: the
//! core's executor knows only [`PortError`], so every transport error is classified here, once.

use crate::client::{CloseError, Writer};
use closeflow_close::port::{PortError, PortErrorKind, WritePort};
use serde_json::{Map, Value};

impl From<CloseError> for PortError {
    fn from(e: CloseError) -> PortError {
        let (kind, last_reply) = match &e {
            CloseError::Unauthorized { status, .. } => {
                (PortErrorKind::Unauthorized, Some(format!("HTTP {status}")))
            }
            CloseError::Rejected {
                status, message, ..
            } => (
                PortErrorKind::Rejected { status: *status },
                Some(format!("HTTP {status}: {message}")),
            ),
            CloseError::Exhausted { .. } => (PortErrorKind::Unavailable, None),
            CloseError::Interrupted { .. } => (PortErrorKind::Interrupted, None),
            CloseError::BadReply { .. } => (PortErrorKind::BadReply, None),
            CloseError::BadUrl { .. } => (PortErrorKind::BadUrl, None),
            CloseError::Unreachable { .. } => (PortErrorKind::Unreachable, None),
        };
        PortError {
            kind,
            message: e.to_string(),
            last_reply,
        }
    }
}

impl WritePort for Writer {
    async fn create_lead(&self, body: &Map<String, Value>) -> Result<Value, PortError> {
        Ok(Writer::create_lead(self, body).await?)
    }
    async fn create_contact(&self, body: &Map<String, Value>) -> Result<Value, PortError> {
        Ok(Writer::create_contact(self, body).await?)
    }
    async fn update_lead(&self, id: &str, body: &Map<String, Value>) -> Result<Value, PortError> {
        Ok(Writer::update_lead(self, id, body).await?)
    }
    async fn update_contact(
        &self,
        id: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, PortError> {
        Ok(Writer::update_contact(self, id, body).await?)
    }
}
