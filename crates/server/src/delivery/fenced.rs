//! The Close writer as an attempt uses it: every write checks first that this process still
//! holds the event's keys (a cluster's key locks can be lost: a renewal found another holder,
//! or none succeeded for as long as a lock lives). Close has no conditional writes, so this is
//! as far as fencing toward Close goes: no write starts on a lost hold, and one that was under
//! way when the hold was lost is logged and counted.

use crate::telemetry::{self, InternalEvent};
use closeflow_close::port::{PortError, PortErrorKind, WritePort};
use closeflow_queue::KeyHold;
use serde_json::{Map, Value};

pub(super) struct Fenced<'a, W> {
    pub(super) inner: &'a W,
    pub(super) hold: &'a KeyHold,
    pub(super) instance: &'a str,
}

impl<W: WritePort + Sync> Fenced<'_, W> {
    async fn write<F>(&self, what: &'static str, f: F) -> Result<Value, PortError>
    where
        F: std::future::Future<Output = Result<Value, PortError>> + Send,
    {
        if !self.hold.holds() {
            telemetry::WriteFenced {
                instance: self.instance,
                what,
                refused: true,
            }
            .emit();
            return Err(PortError::new(
                PortErrorKind::Unavailable,
                format!("{what}: not sent: this node no longer holds the event's lookup keys"),
            ));
        }
        // Cancelled (dropped, so not sent if it had not gone out yet, and not retried) as soon
        // as the hold stops holding: a node paused mid-write resumes with its timers past due,
        // and the watch, polled first, wins over the request.
        let lost = async {
            while self.hold.holds() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        let r = tokio::select! {
            biased;
            () = lost => Err(PortError::new(
                PortErrorKind::Interrupted,
                format!("{what}: cancelled: this node no longer holds the event's lookup keys"),
            )),
            r = f => r,
        };
        if !self.hold.holds() {
            telemetry::WriteFenced {
                instance: self.instance,
                what,
                refused: false,
            }
            .emit();
        }
        r
    }
}

impl<W: WritePort + Sync> WritePort for Fenced<'_, W> {
    async fn create_lead(&self, body: &Map<String, Value>) -> Result<Value, PortError> {
        self.write("create lead", self.inner.create_lead(body))
            .await
    }
    async fn create_contact(&self, body: &Map<String, Value>) -> Result<Value, PortError> {
        self.write("create contact", self.inner.create_contact(body))
            .await
    }
    async fn update_lead(&self, id: &str, body: &Map<String, Value>) -> Result<Value, PortError> {
        self.write("update lead", self.inner.update_lead(id, body))
            .await
    }
    async fn update_contact(
        &self,
        id: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, PortError> {
        self.write("update contact", self.inner.update_contact(id, body))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the writes that reach it.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl WritePort for Counting {
        async fn create_lead(&self, _: &Map<String, Value>) -> Result<Value, PortError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Value::Null)
        }
        async fn create_contact(&self, _: &Map<String, Value>) -> Result<Value, PortError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Value::Null)
        }
        async fn update_lead(&self, _: &str, _: &Map<String, Value>) -> Result<Value, PortError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Value::Null)
        }
        async fn update_contact(
            &self,
            _: &str,
            _: &Map<String, Value>,
        ) -> Result<Value, PortError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Value::Null)
        }
    }

    #[tokio::test]
    async fn no_write_goes_out_once_the_keys_are_lost_or_their_locks_lapsed() {
        let inner = Counting::default();
        let hold = KeyHold::default();
        let w = Fenced {
            inner: &inner,
            hold: &hold,
            instance: "acme",
        };
        let body = Map::new();
        assert!(
            w.create_lead(&body).await.is_ok(),
            "one process's hold stands"
        );
        hold.fence.lose();
        let e = w.update_contact("cont_1", &body).await.unwrap_err();
        assert_eq!(
            e.kind,
            PortErrorKind::Unavailable,
            "retried later, not dead"
        );
        assert!(e.message.contains("no longer holds"), "{e}");
        // Locks whose last renewal is too old are not trusted either.
        let lapsed = KeyHold {
            release: None,
            fence: std::sync::Arc::new(closeflow_queue::Fence::until(std::time::Instant::now())),
        };
        let w = Fenced {
            inner: &inner,
            hold: &lapsed,
            instance: "acme",
        };
        assert!(w.create_contact(&body).await.is_err());
        assert_eq!(
            inner.0.load(Ordering::SeqCst),
            1,
            "only the first write reached Close"
        );
    }
}
