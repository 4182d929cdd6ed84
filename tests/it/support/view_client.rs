//! A client of the live view on a server's HTTP listener, as a browser uses
//! it: the login form, the session cookie, the JSON payloads and the event
//! stream, with reqwest's blocking client (redirects not followed, so the
//! login's `Set-Cookie` is seen). Each request runs on a thread of its own,
//! so it may be made from async tests too.

use std::{
    io::{BufRead as _, BufReader},
    sync::mpsc,
    time::{Duration, Instant},
};

/// An answer: status, headers (names in lower case), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// The live view of the server whose HTTP listener is on `port`.
#[derive(Debug, Clone)]
pub struct View {
    pub port: u16,
    /// `sensorhub_session=<id>` once logged in.
    pub cookie: Option<String>,
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}

fn answer(response: reqwest::blocking::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response.text().unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// Runs `f` on a thread of its own (the blocking client refuses to run
/// inside a runtime).
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(f).join().expect("the HTTP request thread"))
}

impl View {
    pub fn new(port: u16) -> View {
        View { port, cookie: None }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A GET with the session cookie (if any) and `headers`.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let url = self.url(path);
        off_runtime(|| {
            let mut request = client().get(&url);
            if let Some(cookie) = &self.cookie {
                request = request.header("cookie", cookie);
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            answer(request.send().unwrap_or_else(|e| panic!("GET {url}: {e}")))
        })
    }

    pub fn get(&self, path: &str) -> Answer {
        self.get_with(path, &[])
    }

    /// Posts the login form with `token`, and `headers`.
    pub fn post_login(&self, token: &str, headers: &[(&str, &str)]) -> Answer {
        let url = self.url("/login");
        let body = format!("token={}", form_encode(token));
        off_runtime(|| {
            let mut request = client()
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            answer(request.send().unwrap_or_else(|e| panic!("POST {url}: {e}")))
        })
    }

    /// Logs in through the form, as a browser on this origin posts it;
    /// panics unless a session cookie is set.
    pub fn login(&mut self, token: &str) -> Answer {
        let origin = format!("http://127.0.0.1:{}", self.port);
        let answer = self.post_login(
            token,
            &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        );
        assert_eq!(answer.status, 303, "login: {answer:?}");
        let set_cookie = answer.header("set-cookie").expect("a session cookie");
        self.cookie = Some(set_cookie.split(';').next().expect("name=value").to_owned());
        answer
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let answer = self.get("/view/api/snapshot");
        assert_eq!(answer.status, 200, "snapshot: {answer:?}");
        answer.json()
    }

    /// Opens the event stream (as the page's `EventSource` does).
    pub fn events(&self) -> Events {
        let url = self.url("/view/events");
        let cookie = self.cookie.clone();
        let origin = format!("http://127.0.0.1:{}", self.port);
        let (tx, rx) = mpsc::channel();
        let (status_tx, status_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut request = reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("HTTP client")
                .get(&url)
                .header("accept", "text/event-stream")
                .header("origin", origin)
                .header("sec-fetch-site", "same-origin");
            if let Some(cookie) = cookie {
                request = request.header("cookie", cookie);
            }
            let response = match request.send() {
                Ok(response) => response,
                Err(e) => {
                    let _ = status_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = status_tx.send(Ok(response.status().as_u16()));
            let mut raw = Vec::new();
            let mut name = String::new();
            let mut data = String::new();
            let mut lines = BufReader::new(response);
            loop {
                raw.clear();
                match lines.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if !name.is_empty() || !data.is_empty() {
                        let event = Event {
                            name: std::mem::take(&mut name),
                            data: std::mem::take(&mut data),
                        };
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                } else if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
        });
        let status = status_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the event stream answers")
            .expect("the event stream request");
        Events { status, rx }
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// An open event stream.
#[derive(Debug)]
pub struct Events {
    pub status: u16,
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event, within `limit`.
    pub fn next(&self, limit: Duration) -> Option<Event> {
        self.rx.recv_timeout(limit).ok()
    }

    /// Ticks until `found` returns `Some` for one, within `limit`; panics
    /// with the last tick otherwise.
    pub fn tick_until<T>(
        &self,
        limit: Duration,
        mut found: impl FnMut(&serde_json::Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + limit;
        let mut last = None;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some(event) = self.next(left) else { break };
            if event.name != "tick" {
                continue;
            }
            let tick = event.json();
            if let Some(value) = found(&tick) {
                return value;
            }
            last = Some(tick);
        }
        panic!("no tick as wanted within {limit:?}; the last was {last:#?}")
    }
}

/// `application/x-www-form-urlencoded` of one value.
fn form_encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}
