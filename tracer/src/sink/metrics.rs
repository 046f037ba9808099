//! Live metrics: the Prometheus text of the report, refreshed at every tick, published to the
//! server that answers /metrics.

use std::sync::{Arc, Mutex};

use super::Sink;
use crate::render;
use crate::report::Report;

pub struct Metrics {
    /// The text the server answers with.
    text: Arc<Mutex<String>>,
}

impl Metrics {
    pub fn new(text: Arc<Mutex<String>>) -> Metrics {
        Metrics { text }
    }

    fn publish(&self, r: &Report) {
        let text = render::prometheus::render(r);
        if let Ok(mut m) = self.text.lock() {
            *m = text;
        }
    }
}

impl Sink for Metrics {
    fn wants_ticks(&self) -> bool {
        true
    }

    fn start(&mut self, r: &Report) {
        self.publish(r);
    }

    fn tick(&mut self, r: &Report) {
        self.publish(r);
    }
}
