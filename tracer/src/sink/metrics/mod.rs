//! Live metrics (`--metrics-addr`): the report published at every tick, as Prometheus text
//! (`prometheus`), to the HTTP server that answers /metrics (`server`), which starts with the
//! recording. The text is not a report file (no `--format` writes it): it lives here, with the
//! endpoint that serves it.

pub mod prometheus;
mod server;

pub use server::MetricsListener;

use super::Sink;
use crate::error::Result;
use crate::report::Report;
use server::Metrics as Server;

pub struct Metrics {
    /// The bound address, until the recording starts.
    listener: Option<MetricsListener>,
    server: Option<Server>,
}

impl Metrics {
    pub fn new(listener: MetricsListener) -> Metrics {
        Metrics {
            listener: Some(listener),
            server: None,
        }
    }
}

impl Sink for Metrics {
    fn wants_ticks(&self) -> bool {
        true
    }

    fn start(&mut self, r: &Report) -> Result<()> {
        if let Some(l) = self.listener.take() {
            self.server = Some(l.start(r)?);
        }
        Ok(())
    }

    fn tick(&mut self, r: &Report) {
        if let Some(s) = &self.server {
            s.publish(r);
        }
    }
}
