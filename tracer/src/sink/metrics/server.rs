//! The /metrics endpoint of `--metrics-addr`: an HTTP/1 server (hyper) that serves the text of
//! the latest published report to every scrape. Bound before the recording starts, so that a
//! busy port fails fast; the text is published after each checkpoint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::prometheus;
use crate::error::{Error, Result};
use crate::report::Report;
use crate::say;

/// A bound listener, not yet serving.
pub struct MetricsListener {
    listener: std::net::TcpListener,
}

/// Where the latest text is published for the server (cheap to clone).
#[derive(Clone, Default)]
pub struct Metrics {
    latest: Arc<Mutex<Bytes>>,
}

impl MetricsListener {
    /// Binds `addr` and says where /metrics is served (with a warning when that is beyond this
    /// machine).
    pub fn bind(addr: SocketAddr) -> Result<MetricsListener> {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            Error::BadArgument(format!("cannot listen on {addr} for --metrics-addr: {e}"))
        })?;
        Ok(MetricsListener { listener })
    }

    /// Starts serving on the current tokio runtime, the text of `first` until the next publish.
    pub fn start(self, first: &Report) -> Result<Metrics> {
        if let Ok(addr) = self.listener.local_addr() {
            announce(addr);
        }
        let l = self
            .listener
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(self.listener))
            .map_err(|e| Error::Other(format!("metrics listener: {e}")))?;
        let metrics = Metrics::default();
        metrics.publish(first);
        tokio::spawn(serve(l, metrics.clone()));
        Ok(metrics)
    }
}

impl Metrics {
    /// Makes `r` what the next scrapes see.
    pub fn publish(&self, r: &Report) {
        let text = Bytes::from(prometheus::render(r));
        if let Ok(mut m) = self.latest.lock() {
            *m = text;
        }
    }

    fn latest(&self) -> Bytes {
        self.latest.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// Says where /metrics is served, and warns when that is beyond this machine.
fn announce(addr: SocketAddr) {
    say!("tracer: serving Prometheus metrics at http://{addr}/metrics");
    if !addr.ip().is_loopback() {
        let reach = if addr.ip().is_unspecified() {
            "every network interface"
        } else {
            "a non-loopback address"
        };
        say!(
            "tracer: WARNING: --metrics-addr {addr} serves /metrics on {reach}, without authentication: it shows process ids, command names and the names of module globals to anyone who can reach it; use 127.0.0.1:{} to keep it on this machine",
            addr.port()
        );
    }
}

/// Answers GET /metrics with the latest text, anything else with 404; one request per
/// connection.
fn answer(req: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if req.uri().path() == "/metrics" {
        (StatusCode::OK, prometheus::CONTENT_TYPE, metrics.latest())
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"tracer serves /metrics\n"),
        )
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        content_type.parse().expect("a valid header value"),
    );
    h.insert(CONNECTION, "close".parse().expect("a valid header value"));
    resp
}

/// At most this many scrapes are served at once; a connection beyond waits in the listen
/// backlog (and is refused when that is full). Prometheus needs one.
const MAX_CONNECTIONS: usize = 32;
/// A connection's whole life (its request read, the answer written): a client that holds it
/// longer is dropped.
const CONNECTION_TIME: Duration = Duration::from_secs(10);

/// Serves /metrics with bounded resources: a local user opening connections by the thousand
/// cannot take the tracer's descriptors (which it needs to read its targets) nor its CPU.
async fn serve(listener: tokio::net::TcpListener, metrics: Metrics) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let sock = match listener.accept().await {
            Ok((sock, _)) => sock,
            Err(_) => {
                // Out of descriptors or memory: wait rather than spin on the error.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let resp = answer(&req, &metrics);
                async move { Ok::<_, Infallible>(resp) }
            });
            // A client that does not finish its request in time is dropped.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(3))
                .keep_alive(false)
                .serve_connection(TokioIo::new(sock), service);
            let _ = tokio::time::timeout(CONNECTION_TIME, conn).await;
            drop(permit);
        });
    }
}
