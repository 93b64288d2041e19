//! The lookup flags `send` and `serve` share: coalescing, the identity cache, the naive baseline.

use closeflow_close_api::live::LiveOptions;
use closeflow_close_api::search::{LookupMode, SearchOptions};
use std::time::Duration;

#[derive(clap::Args, Clone, Debug)]
pub struct LookupArgs {
    /// How long a key's lookup result is kept (0 turns the cache off). Within it, an edit made
    /// in Close's UI may be overwritten once (see the README, "Lookups, coalesced and cached").
    #[arg(long, default_value = "5m", value_parser = crate::duration::duration)]
    pub cache_ttl: Duration,
    /// Lookup keys per search request at most (Close answering 400 splits it further).
    #[arg(long, default_value_t = 50)]
    pub search_chunk: usize,
    /// Events whose lookups share one search at most.
    #[arg(long, default_value_t = 50)]
    pub coalesce: usize,
    /// How long a lookup waits for others to share its search.
    #[arg(long, default_value = "5ms", value_parser = crate::duration::duration)]
    pub coalesce_window: Duration,
    /// The naive baseline, for benchmarks: a search per key per event, no coalescing, no cache.
    #[arg(long)]
    pub naive: bool,
}

impl LookupArgs {
    pub fn mode(&self) -> LookupMode {
        if self.naive {
            LookupMode::PerKey
        } else {
            LookupMode::Combined
        }
    }

    pub fn search_options(&self) -> SearchOptions {
        SearchOptions {
            mode: self.mode(),
            chunk: self.search_chunk.max(1),
        }
    }

    pub fn options(&self) -> LiveOptions {
        if self.naive {
            return LiveOptions::off();
        }
        LiveOptions {
            coalesce_window: self.coalesce_window,
            coalesce_max: self.coalesce.max(1),
            ttl: self.cache_ttl,
            // `empty_ttl` stays the default: the cache bounds it by the TTL itself.
            ..LiveOptions::default()
        }
    }
}
