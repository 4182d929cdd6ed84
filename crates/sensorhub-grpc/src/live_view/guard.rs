//! What every response of the view carries, and the refusal of requests
//! that another site's page made.
//!
//! Headers: a Content-Security-Policy that allows only this origin's own
//! script, style and connections (no inline script, no frames of the page
//! anywhere: `frame-ancestors 'none'`), `X-Content-Type-Options: nosniff`,
//! `X-Frame-Options: DENY` for browsers without CSP 2, no referrer to
//! other origins, and
//! `Cache-Control: no-store` (the page shows readings).
//!
//! Cross-origin: the session cookie is `SameSite=Strict`, so another site's
//! requests carry no session. The login form and the event stream also
//! refuse any request a browser marks as coming from another site
//! (`Sec-Fetch-Site`), or whose `Origin` is not this host: that stops a
//! login CSRF (another site logging a visitor in with its own token) and
//! reading the stream through a rebound DNS name. A request with neither
//! header was not made by a web page.

use axum::{
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Adds the security headers to every response of the view.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Whether a request comes from this origin's own pages (or from no page at all).
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return false;
    }
    let fetched_same_origin = headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() == b"same-origin");
    match headers.get(header::ORIGIN) {
        None => true,
        // A browser sends `Origin: null` for a form posted from a page of its
        // own origin too, where its referrer policy says so; it then says
        // where the request came from in `Sec-Fetch-Site`.
        Some(origin) if origin.as_bytes() == b"null" => fetched_same_origin,
        Some(origin) => {
            let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
                return false;
            };
            let origin = origin.as_bytes();
            origin == format!("http://{host}").as_bytes()
                || origin == format!("https://{host}").as_bytes()
        }
    }
}

/// The answer to a request another site's page made.
pub fn cross_origin_refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "cross-origin request refused: open the page from this server's own address\n",
    )
        .into_response()
}

/// Whether the request reached us over TLS (through a proxy that says so),
/// so the session cookie can be `Secure`.
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .is_some_and(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn same_origin_requests_pass_and_others_do_not() {
        let host = ("host", "127.0.0.1:9464");
        assert!(same_origin(&headers(&[host])), "no page made it");
        assert!(same_origin(&headers(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:9464")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://127.0.0.1:9464")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "null"),
            ("sec-fetch-site", "same-origin")
        ])));
        for refused in [
            headers(&[host, ("sec-fetch-site", "cross-site")]),
            headers(&[host, ("sec-fetch-site", "same-site")]),
            headers(&[host, ("origin", "http://evil.example")]),
            headers(&[host, ("origin", "null")]),
            headers(&[host, ("origin", "null"), ("sec-fetch-site", "cross-site")]),
            headers(&[host, ("origin", "http://127.0.0.1:9465")]),
            headers(&[("origin", "http://127.0.0.1:9464")]),
            headers(&[
                host,
                ("sec-fetch-site", "same-origin"),
                ("origin", "http://evil.example"),
            ]),
        ] {
            assert!(!same_origin(&refused), "{refused:?}");
        }
    }

    #[test]
    fn tls_is_what_the_proxy_says() {
        assert!(over_tls(&headers(&[("x-forwarded-proto", "https")])));
        assert!(!over_tls(&headers(&[("x-forwarded-proto", "http")])));
        assert!(!over_tls(&HeaderMap::new()));
    }
}
