//! The client's errors, and how a URL or a wire failure is put in words (never with the
//! credentials a URL may carry).

#[derive(Debug, Clone, thiserror::Error)]
pub enum CloseError {
    #[error("Close rejected {key} (HTTP {status}); check settings.api_key for this instance")]
    Unauthorized {
        status: u16,
        /// Which key, never the key: "the API key", or "API key 2 of 3" of a list.
        key: String,
    },
    #[error("Close refused the request {method} {path} (HTTP {status}): {message}")]
    Rejected {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{method} {path} still failing after {attempts} attempts: {last}")]
    Exhausted {
        method: String,
        path: String,
        attempts: u32,
        last: String,
    },
    #[error(
        "{method} {path} was interrupted ({message}); the event is planned again before retrying"
    )]
    Interrupted {
        method: String,
        path: String,
        message: String,
    },
    #[error("unexpected reply from Close for {path}: {message}")]
    BadReply { path: String, message: String },
    #[error("the Close URL `{url}` is not usable: {message}")]
    BadUrl { url: String, message: String },
    /// Nothing answers at the URL (connection refused, no such host): there is no point in
    /// trying the next event either.
    #[error("cannot connect to Close at {url}: {message}")]
    Unreachable { url: String, message: String },
}

/// A URL fit for messages: credentials in it (`https://user:pass@…`) are removed.
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("");
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        Err(_) => url.split('@').next_back().unwrap_or_default().to_string(),
    }
}

/// Checks a Close base URL: `http` or `https`, with a host (the check instance files get).
pub fn check_base_url(url: &str) -> Result<(), CloseError> {
    closeflow_mapping::instance::check_url(url).map_err(|message| CloseError::BadUrl {
        url: shown_url(url),
        message,
    })
}

/// What went wrong on the wire, in words: the innermost cause (e.g. "Connection refused (os
/// error 111)"); reqwest's own message names the URL, which the caller says itself.
pub(crate) fn cause(e: &reqwest::Error) -> String {
    let mut last = e.without_url_ref();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        last = s.to_string();
        src = s.source();
    }
    last
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut t = self.to_string();
        if let Some(u) = self.url() {
            t = t.replace(&format!(" for url ({u})"), "");
        }
        t
    }
}
