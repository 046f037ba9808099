//! The live view (`tracer top`): the screen redrawn from the report at every tick; the terminal
//! is given back when the recording stops.

use super::Sink;
use crate::report::Report;

pub struct Live {
    /// The terminal in the live view's mode (restored when dropped).
    terminal: Option<crate::top::Terminal>,
}

impl Live {
    pub fn new(terminal: crate::top::Terminal) -> Live {
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
