//! How a live run's lookups are shared: the coalescing window and size, and the cache's
//! lifetimes and size (the CLI's and the server's flags fill these in).

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// How long lookups wait for others to share their search (0: no coalescing).
    pub coalesce_window: Duration,
    /// Events whose keys go into one search at most.
    pub coalesce_max: usize,
    /// How long a key's result stays fresh (0: no cache).
    pub ttl: Duration,
    /// How long a key that matched nothing stays fresh (at most `ttl`).
    pub empty_ttl: Duration,
    /// Cached keys at most; past it, expired entries and unreferenced records are swept.
    pub max_keys: usize,
    /// Other processes write the same organisation (a cluster's nodes): a cached "no match"
    /// for a Company ID still orders and reads ahead, but an event about to be planned (its
    /// keys held) searches again — another node may have created that company's lead since,
    /// and planning on the stale answer would create it a second time. A person's own keys
    /// (User ID, email) are one node's (partitions go by person); matches stay trusted.
    pub shared_writers: bool,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            coalesce_window: Duration::from_millis(5),
            coalesce_max: 50,
            ttl: Duration::from_secs(300),
            empty_ttl: Duration::from_secs(2),
            max_keys: 200_000,
            shared_writers: false,
        }
    }
}

impl LiveOptions {
    /// The naive baseline: no coalescing, no cache.
    pub fn off() -> LiveOptions {
        LiveOptions {
            coalesce_window: Duration::ZERO,
            coalesce_max: 1,
            ttl: Duration::ZERO,
            empty_ttl: Duration::ZERO,
            max_keys: 0,
            shared_writers: false,
        }
    }
}
