//! Plain HTTP/1.1 requests to the servers tests start (`/metrics`,
//! `/healthz`, Prometheus' API, the alert log), with reqwest's blocking
//! client. Each request runs on a thread of its own, so it may be made from
//! async tests too (the blocking client refuses to run inside a runtime).

use std::time::Duration;

/// An answer: the status code, the headers (names in lower case), the body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// A GET to `127.0.0.1:port`: the status code and the body.
pub fn get(port: u16, path: &str) -> (u16, String) {
    let response = request(reqwest::Method::GET, port, path, None);
    (response.status, response.body)
}

/// A GET to `127.0.0.1:port`, with the headers.
pub fn get_response(port: u16, path: &str) -> Response {
    request(reqwest::Method::GET, port, path, None)
}

/// A GET to `127.0.0.1:port` with `accept` as its `Accept` header.
pub fn get_accepting(port: u16, path: &str, accept: &str) -> Response {
    let url = format!("http://127.0.0.1:{port}{path}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<Response, reqwest::Error> {
                let response = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()?
                    .get(&url)
                    .header("accept", accept)
                    .send()?;
                into_response(response)
            })
            .join()
            .expect("the HTTP request thread")
    })
    .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// A POST of a JSON body to `127.0.0.1:port`: the status code and the body.
pub fn post_json(port: u16, path: &str, body: &str) -> (u16, String) {
    let response = request(reqwest::Method::POST, port, path, Some(body));
    (response.status, response.body)
}

/// Like [`get`], but `None` while nothing answers (a server starting up).
pub fn try_get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = try_request(reqwest::Method::GET, port, path, None).ok()?;
    Some((response.status, response.body))
}

fn request(method: reqwest::Method, port: u16, path: &str, body: Option<&str>) -> Response {
    try_request(method.clone(), port, path, body)
        .unwrap_or_else(|e| panic!("{method} 127.0.0.1:{port}{path}: {e}"))
}

fn try_request(
    method: reqwest::Method,
    port: u16,
    path: &str,
    body: Option<&str>,
) -> Result<Response, reqwest::Error> {
    let url = format!("http://127.0.0.1:{port}{path}");
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()?;
                let mut request = client.request(method, &url);
                if let Some(body) = body {
                    request = request
                        .header("content-type", "application/json")
                        .body(body.to_owned());
                }
                into_response(request.send()?)
            })
            .join()
            .expect("the HTTP request thread")
    })
}

fn into_response(response: reqwest::blocking::Response) -> Result<Response, reqwest::Error> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    Ok(Response {
        status,
        headers,
        body: response.text()?,
    })
}

/// `value` percent-encoded for a query string.
pub fn query_value(value: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", [("q", value)])
        .expect("a URL")
        .query()
        .expect("a query")
        .trim_start_matches("q=")
        .to_owned()
}
