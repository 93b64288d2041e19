//! CORS on the intake routes. A web page is on another origin than its closeflow, and
//! analytics.js sends `Authorization` (and `X-Retry-Count` on a retry), so the browser asks
//! first with a preflight (`OPTIONS`) and then reads each reply only if it names the page's
//! origin. Without the header on a reply the library counts the event as failed and sends it
//! again, so every intake reply carries it: 200 and every refusal alike. The admin and ops
//! routes get none of this.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The origins whose pages may send events (`--cors-origins`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origins {
    /// Any origin (`*`): a browser's write key is public anyway, in the page's source.
    #[default]
    Any,
    /// Only these, each `scheme://host[:port]` as a browser sends it in `Origin`.
    List(Vec<HeaderValue>),
}

impl Origins {
    /// `*`, or a comma-separated list of origins such as `https://www.example.com`.
    pub fn parse(s: &str) -> Result<Origins, String> {
        let s = s.trim();
        if s == "*" {
            return Ok(Origins::Any);
        }
        let mut list = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((scheme, host)) = part.split_once("://") else {
                return Err(format!(
                    "`{part}` is not an origin: write it as the browser sends it, such as https://www.example.com"
                ));
            };
            if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
                return Err(format!(
                    "`{part}` is not an origin: scheme://host[:port], with no path (https://www.example.com)"
                ));
            }
            let v =
                HeaderValue::from_str(part).map_err(|_| format!("`{part}` is not an origin"))?;
            list.push(v);
        }
        if list.is_empty() {
            return Err("no origin given: `*` for any, or a comma-separated list".into());
        }
        Ok(Origins::List(list))
    }
}

/// The request headers the client libraries send: analytics.js (`Authorization`,
/// `X-Retry-Count`, `Content-Type: text/plain`), RudderStack's browser SDK (`AnonymousId`),
/// and a gzip body's `Content-Encoding`.
pub const ALLOWED_HEADERS: [HeaderName; 5] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    HeaderName::from_static("x-retry-count"),
    HeaderName::from_static("anonymousid"),
];

/// How long a browser may keep a preflight's answer (Chromium keeps at most 2 hours).
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The CORS layer: preflights answered from it, the allow-origin header (and the exposed
/// `Retry-After`, which analytics.js reads on a 429 or 503) on every other reply.
pub fn layer(origins: &Origins) -> CorsLayer {
    let allow = match origins {
        Origins::Any => AllowOrigin::any(),
        Origins::List(l) => AllowOrigin::list(l.iter().cloned()),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::POST])
        .allow_headers(ALLOWED_HEADERS)
        .expose_headers([header::RETRY_AFTER])
        .max_age(MAX_AGE)
}

/// A preflight is answered 204 No Content (tower-http answers 200).
async fn preflight_no_content(req: Request, next: Next) -> Response {
    let preflight = req.method() == Method::OPTIONS;
    let mut r = next.run(req).await;
    if preflight && r.status() == StatusCode::OK {
        *r.status_mut() = StatusCode::NO_CONTENT;
    }
    r
}

/// `router` (the intake routes alone) with CORS on every route and every reply.
pub fn apply<S: Clone + Send + Sync + 'static>(router: Router<S>, origins: &Origins) -> Router<S> {
    router
        .layer(layer(origins))
        .layer(middleware::from_fn(preflight_no_content))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    #[test]
    fn origins_parse_star_or_a_list() {
        assert_eq!(Origins::parse("*"), Ok(Origins::Any));
        assert_eq!(
            Origins::parse("https://a.example, http://127.0.0.1:3000"),
            Ok(Origins::List(vec![
                HeaderValue::from_static("https://a.example"),
                HeaderValue::from_static("http://127.0.0.1:3000"),
            ]))
        );
        for bad in [
            "",
            "a.example",
            "https://a.example/page",
            "ftp://a.example",
            "https://",
        ] {
            assert!(Origins::parse(bad).is_err(), "{bad:?} is refused");
        }
    }

    /// Every status a handler answers carries the header, whatever it is.
    #[tokio::test]
    async fn every_reply_of_the_wrapped_routes_names_the_origin() {
        for status in [200u16, 400, 401, 408, 413, 503] {
            let r = apply(
                Router::new().route(
                    "/v1/i",
                    post(move || async move { StatusCode::from_u16(status).unwrap() }),
                ),
                &Origins::Any,
            );
            let reply = r
                .oneshot(
                    axum::http::Request::post("/v1/i")
                        .header("origin", "http://page.test")
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(reply.status().as_u16(), status);
            assert_eq!(
                reply.headers()["access-control-allow-origin"],
                "*",
                "status {status}"
            );
            assert_eq!(
                reply.headers()["access-control-expose-headers"],
                "retry-after"
            );
        }
    }

    #[tokio::test]
    async fn a_listed_origin_is_named_and_another_is_not() {
        let origins = Origins::parse("http://page.test").unwrap();
        let r = apply(
            Router::new().route("/v1/i", post(|| async { StatusCode::OK })),
            &origins,
        );
        let ask = |origin: &'static str| {
            axum::http::Request::builder()
                .method(Method::OPTIONS)
                .uri("/v1/i")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                )
                .body(Body::empty())
                .unwrap()
        };
        let yes = r.clone().oneshot(ask("http://page.test")).await.unwrap();
        assert_eq!(yes.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            yes.headers()["access-control-allow-origin"],
            "http://page.test"
        );
        assert_eq!(yes.headers()["access-control-allow-methods"], "POST");
        let allowed = yes.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap();
        for h in [
            "authorization",
            "content-type",
            "x-retry-count",
            "content-encoding",
        ] {
            assert!(allowed.contains(h), "{allowed}");
        }
        assert_eq!(yes.headers()["access-control-max-age"], "86400");
        let no = r.oneshot(ask("http://elsewhere.test")).await.unwrap();
        assert!(no.headers().get("access-control-allow-origin").is_none());
    }
}
