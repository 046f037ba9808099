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
        let (w, h) = crate::top::Terminal::size();
        let screen = crate::top::screen(r, w, h);
        let mut out = std::io::stdout();
        let _ = std::io::Write::write_all(&mut out, screen.as_bytes());
        let _ = std::io::Write::flush(&mut out);
    }

    fn stop(&mut self) {
        self.terminal = None;
    }
}
