//! Live metrics: the report published at every tick to the server that answers /metrics
//! (`crate::metrics`), which starts with the recording.

use super::Sink;
use crate::error::Result;
use crate::metrics::{Metrics as Server, MetricsListener};
use crate::report::Report;

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
