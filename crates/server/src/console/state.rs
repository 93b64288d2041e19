//! The console's state, kept by the server (`App::console`): open sessions and the counts
//! sampled for the overview's rates. Apart from the pages so that the server's state depends
//! on no page.

use axum::http::{HeaderMap, header};
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a console session lasts without a new login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
pub(super) const SESSION_COOKIE: &str = "closeflow_session";

/// Counts sampled every few seconds (the server's chores loop calls [`sample`]): rates are
/// differences over about the last minute.
/// Instance → (accepted, final outcomes), at one moment.
type Counts = HashMap<String, (u64, u64)>;

#[derive(Debug, Default)]
pub struct Samples {
    pub(super) taken: VecDeque<(Instant, Counts)>,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    expires: Instant,
}

/// The console's state: sessions, and the counts sampled for the overview's rates.
#[derive(Debug, Default)]
pub struct Console {
    sessions: Mutex<HashMap<String, Session>>,
    pub(crate) samples: Mutex<Samples>,
}

pub(super) fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(super) fn same(a: &str, b: &str) -> bool {
    constant_time_eq::constant_time_eq(a.as_bytes(), b.as_bytes())
}

impl Console {
    /// The session the request's cookie names, if it is open.
    pub fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let mut g = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        g.retain(|_, s| s.expires > now);
        g.get(id).cloned()
    }

    pub(super) fn open(&self) -> String {
        let id = random_token();
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                id.clone(),
                Session {
                    csrf: random_token(),
                    expires: Instant::now() + SESSION_TTL,
                },
            );
        id
    }

    pub(super) fn close(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.sessions
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(id);
        }
    }
}
