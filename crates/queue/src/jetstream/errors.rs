//! NATS errors as the queue's errors, by kind: the JetStream API's error code wherever the
//! client's error carries one (anywhere in its chain of sources), never the message's text.

use crate::QueueError;
use async_nats::jetstream::{self, ErrorCode, stream};

/// The JetStream API error inside `e`, if the server answered with one.
fn api_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a jetstream::Error> {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(api) = e.downcast_ref::<jetstream::Error>() {
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
    let full = api_error(&*e).is_some_and(is_full);
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
