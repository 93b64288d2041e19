//! The lookup flags `send` and `serve` share: coalescing, the identity cache, the naive baseline.

use crate::duration::{Span, span};
use closeflow_close_api::live::LiveOptions;
use closeflow_close_api::search::{LookupMode, SearchOptions};

fn at_least_one() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

#[derive(clap::Args, Clone, Debug)]
pub struct LookupArgs {
    /// How long a key's lookup result is kept (0 turns the cache off, and the server then runs
    /// an instance's events one at a time: it cannot know whom an event is about before it runs).
    /// Within it, an edit made in Close's UI may be overwritten once (see the README, "Lookups,
    /// coalesced and cached").
    #[arg(long, default_value_t = Span(LiveOptions::default().ttl), value_parser = span)]
    pub cache_ttl: Span,
    /// Lookup keys per search request at most (Close answering 400 splits it further).
    #[arg(long, default_value_t = SearchOptions::default().chunk, value_parser = at_least_one())]
    pub search_chunk: usize,
    /// Events whose lookups share one search at most.
    #[arg(long, default_value_t = LiveOptions::default().coalesce_max, value_parser = at_least_one())]
    pub coalesce: usize,
    /// How long a lookup waits for others to share its search.
    #[arg(long, default_value_t = Span(LiveOptions::default().coalesce_window), value_parser = span)]
    pub coalesce_window: Span,
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
            chunk: self.search_chunk,
        }
    }

    pub fn options(&self) -> LiveOptions {
        if self.naive {
            return LiveOptions::off();
        }
        LiveOptions {
            coalesce_window: self.coalesce_window.0,
            coalesce_max: self.coalesce,
            ttl: self.cache_ttl.0,
            // `empty_ttl` stays the default: the cache bounds it by the TTL itself.
            ..LiveOptions::default()
        }
    }
}
