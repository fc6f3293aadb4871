//! The operations HTTP server (axum), on a thread and runtime of its own so
//! that it answers while the engine folds:
//!
//! | path | answers |
//! |---|---|
//! | `/metrics` | the registry in the Prometheus text format |
//! | `/healthz` | 200 while the engine loop runs, 503 once it has stopped |
//! | `/readyz` | 200 once state is restored and the lag is within `ops.ready_lag_max`; 503 with the reason otherwise |
//! | `/` | the live lag page (self-contained: no external scripts, works offline) |
//! | `/api/status` | the lag page's data, as JSON |

use crate::metrics::Metrics;
use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// The lag page: HTML, CSS, JavaScript and SVG in one file.
pub const LAG_PAGE: &str = include_str!("lag_page.html");

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `listen` now (so that a taken port is an error before the engine
/// starts) and serves on a thread of its own; returns the bound address.
pub fn serve(listen: &str, metrics: Arc<Metrics>) -> Result<SocketAddr> {
    let addr = listen
        .to_socket_addrs()
        .with_context(|| format!("resolving ops.listen {listen:?}"))?
        .next()
        .with_context(|| format!("ops.listen {listen:?} names no address"))?;
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding the ops server to {addr}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("a runtime for HTTP")?;
    std::thread::Builder::new().name("overlay-ops-http".into()).spawn(move || {
        runtime.block_on(async move {
            let served = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => axum::serve(l, router(metrics)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "the ops server stopped");
            }
        })
    })?;
    Ok(bound)
}

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/status", get(status))
        .with_state(metrics)
}

async fn page(State(m): State<Arc<Metrics>>) -> Response {
    m.count_request("/");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], LAG_PAGE)
        .into_response()
}

async fn prometheus(State(m): State<Arc<Metrics>>) -> Response {
    m.count_request("/metrics");
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], m.render()).into_response()
}

async fn healthz(State(m): State<Arc<Metrics>>) -> Response {
    m.count_request("/healthz");
    if m.healthy() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the engine has stopped\n").into_response()
    }
}

async fn readyz(State(m): State<Arc<Metrics>>) -> Response {
    m.count_request("/readyz");
    match m.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct StatusQuery {
    /// Only history samples taken after this (milliseconds since start): the page asks for what it lacks.
    since_ms: Option<u64>,
}

async fn status(State(m): State<Arc<Metrics>>, Query(q): Query<StatusQuery>) -> Response {
    m.count_request("/api/status");
    let body = serde_json::to_string(&m.status(q.since_ms)).expect("the status serializes");
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let code = text.split(' ').nth(1).unwrap().parse().unwrap();
        (code, text)
    }

    #[test]
    fn the_server_answers_every_path_and_refuses_a_taken_port() {
        let m = Arc::new(Metrics::new("embedded", 0));
        let addr = serve("127.0.0.1:0", m.clone()).unwrap();
        assert!(addr.ip().is_loopback());
        let (code, text) = get(addr, "/metrics");
        assert_eq!(code, 200);
        assert!(text.contains("text/plain; version=0.0.4") && text.contains("# TYPE overlay_consumer_lag gauge"));
        assert_eq!(get(addr, "/healthz").0, 200);
        let (code, text) = get(addr, "/readyz");
        assert_eq!(code, 503);
        assert!(text.contains("not ready: restoring state"), "{text}");
        let (code, text) = get(addr, "/");
        assert_eq!(code, 200);
        assert!(text.contains("<svg") || text.contains("createElementNS"), "the page draws SVG");
        // Nothing loaded from elsewhere: the one URL is the SVG namespace.
        assert!(!text.contains("https://") && !text.contains(" src="), "the page loads nothing from elsewhere");
        assert_eq!(text.matches("http://").count(), 1, "only the SVG namespace");
        let (code, text) = get(addr, "/api/status");
        assert_eq!(code, 200);
        assert!(text.contains("\"mode\":\"embedded\""), "{text}");
        m.polled(&[], Ok(Default::default()), 0);
        std::thread::sleep(std::time::Duration::from_millis(5));
        m.polled(&[], Ok(Default::default()), 0);
        assert_eq!(get(addr, "/api/status").1.matches("\"t_ms\"").count(), 2);
        let first = m.status(None).history[0].t_ms;
        let (_, text) = get(addr, &format!("/api/status?since_ms={first}"));
        assert_eq!(text.matches("\"t_ms\"").count(), 1, "only the samples after since_ms: {text}");
        assert_eq!(get(addr, "/nothing").0, 404);
        m.set_stopped();
        assert_eq!(get(addr, "/healthz").0, 503);
        assert!(serve(&addr.to_string(), m).is_err(), "a taken port is an error");
    }
}
