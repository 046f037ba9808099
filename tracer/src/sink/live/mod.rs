//! The live view (`tracer top`): a terminal view of what grows, redrawn from the report at every
//! tick (about once a second); q quits. The terminal is given back when the recording stops.

mod terminal;
mod view;

pub use terminal::{quit_key, Terminal};

use super::Sink;
use crate::report::Report;

pub struct Live {
    /// The terminal in the live view's mode (restored when dropped).
    terminal: Option<Terminal>,
}

impl Live {
    pub fn new(terminal: Terminal) -> Live {
        Live {
            terminal: Some(terminal),
        }
    }
}

impl Sink for Live {
    fn wants_ticks(&self) -> bool {
        true
    }

    fn tick(&mut self, r: &Report) {
        if let Some(t) = self.terminal.as_mut() {
            t.draw(r);
        }
    }

    fn stop(&mut self) {
        self.terminal = None;
    }
}
