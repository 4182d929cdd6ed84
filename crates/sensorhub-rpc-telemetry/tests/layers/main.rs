//! The layers around plain tower services, recording into the SDK's
//! in-memory exporters: when a call ends (on its trailers, on a
//! trailers-only head, when its body is dropped) and what it is recorded as,
//! on the server side (`server.rs`) and the client side (`client.rs`); and
//! what the live view's recorders see of the calls (`live.rs`).

mod client;
mod live;
mod recorded;
mod server;
