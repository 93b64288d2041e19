//! NATS errors as the queue's errors, by kind: the JetStream API's error code wherever the
//! client's error carries one (anywhere in its chain of sources), never the message's text.

use crate::QueueError;
use async_nats::jetstream::{self, ErrorCode, stream};

/// The JetStream API error inside `e`, if the server answered with one. async-nats carries it
/// either as a source in the chain (publishing, KV writes) or inside the error's kind (creating
/// or reading a stream or a consumer: `…ErrorKind::JetStream`, with no source), so both are
/// looked at.
fn api_error(e: &(dyn std::error::Error + 'static)) -> Option<jetstream::Error> {
    use async_nats::jetstream::context::{
        CreateStreamError, CreateStreamErrorKind, GetStreamError, GetStreamErrorKind,
    };
    use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(api) = e.downcast_ref::<jetstream::Error>() {
            return Some(api.clone());
        }
        if let Some(x) = e.downcast_ref::<CreateStreamError>()
            && let CreateStreamErrorKind::JetStream(api) = x.kind()
        {
            return Some(api);
        }
        if let Some(x) = e.downcast_ref::<GetStreamError>()
            && let GetStreamErrorKind::JetStream(api) = x.kind()
        {
            return Some(api);
        }
        if let Some(x) = e.downcast_ref::<ConsumerError>()
            && let ConsumerErrorKind::JetStream(api) = x.kind()
        {
            return Some(api);
        }
        cur = e.source();
    }
    None
}

/// Whether the server refused to store anything for lack of room: the cluster's or the
/// account's storage is used up, or the stream could not store the message (a full stream or
/// disk). Nothing was stored, and a later try may succeed.
fn is_full(api: &jetstream::Error) -> bool {
    [
        ErrorCode::INSUFFICIENT_RESOURCES,
        ErrorCode::STORAGE_RESOURCES_EXCEEDED,
        ErrorCode::STREAM_STORE_FAILED,
    ]
    .contains(&api.error_code())
}

/// `e` from the step `what`: [`QueueError::Full`] when the cluster has no room, otherwise
/// [`QueueError::Unavailable`].
pub(crate) fn failed(
    what: &str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> QueueError {
    let e = e.into();
    let full = api_error(&*e).as_ref().is_some_and(is_full);
    if full {
        QueueError::Full(format!("{what}: {e}"))
    } else {
        QueueError::Unavailable(format!("{what}: {e}"))
    }
}

/// Whether reading a message by sequence found none there: past the end, or deleted inside
/// the stream's range (which the server answers as an API error of its own).
pub(crate) fn no_message(e: &stream::RawMessageError) -> bool {
    match e.kind() {
        stream::RawMessageErrorKind::NoMessageFound => true,
        stream::RawMessageErrorKind::JetStream(api) => {
            api.code() == 404
                || [ErrorCode::NO_MESSAGE_FOUND, ErrorCode::SEQUENCE_NOT_FOUND]
                    .contains(&api.error_code())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};

    fn api(code: u64) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 503, "err_code": code, "description": "insufficient resources"
        }))
        .expect("a JetStream API error")
    }

    #[test]
    fn a_full_cluster_is_full_whether_the_api_error_is_a_source_or_a_kind() {
        // As creating an instance's stream reports it: inside the kind, with no source.
        let in_kind = CreateStreamError::new(CreateStreamErrorKind::JetStream(api(10023)));
        assert!(matches!(failed("creating", in_kind), QueueError::Full(_)));
        // As a publish reports it: the API error as the source.
        let as_source = CreateStreamError::with_source(CreateStreamErrorKind::Response, api(10047));
        assert!(matches!(failed("storing", as_source), QueueError::Full(_)));
        // Another API error, or none, is not "full".
        let other = CreateStreamError::new(CreateStreamErrorKind::JetStream(api(10059)));
        assert!(matches!(
            failed("creating", other),
            QueueError::Unavailable(_)
        ));
        let none = CreateStreamError::new(CreateStreamErrorKind::TimedOut);
        assert!(matches!(
            failed("creating", none),
            QueueError::Unavailable(_)
        ));
    }
}
