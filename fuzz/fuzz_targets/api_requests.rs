//! Request lines a local client can send: any path, query and method through the agent's
//! real router. Handlers that need the table get 503 here (no table task runs); routing,
//! percent-decoding and query parsing must answer, never panic.
#![no_main]

use std::sync::OnceLock;

use axum::{body::Body, http::Request, Router};
use libfuzzer_sys::fuzz_target;
use observer::api::fuzzing_router;
use tower::ServiceExt;

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fn router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| rt().block_on(async { fuzzing_router() }))
}

fuzz_target!(|data: &[u8]| {
    let (method, uri) = match data.split_first() {
        Some((m, rest)) => (
            ["GET", "POST", "HEAD", "DELETE", "OPTIONS"][*m as usize % 5],
            rest,
        ),
        None => return,
    };
    let Ok(req) = Request::builder().method(method).uri(uri).body(Body::empty()) else {
        return;
    };
    let resp = rt()
        .block_on(router().clone().oneshot(req))
        .expect("the router is infallible");
    assert!(resp.status().as_u16() >= 200);
});
