//! The progress line of a recording on stderr (time, totals, what grows so far), drawn by
//! indicatif only when stderr is a terminal: hidden otherwise, and never failing the recording
//! (a closed or full stderr is ignored).

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One line of progress that messages print above.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A progress line when `enabled` and stderr is a terminal, else one that shows nothing.
    pub fn new(enabled: bool) -> Progress {
        let bar = if enabled && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar
        } else {
            ProgressBar::hidden()
        };
        // Messages (`say!`) erase the line before they print.
        crate::util::PROGRESS_LINE.store(!bar.is_hidden(), std::sync::atomic::Ordering::Relaxed);
        Progress { bar }
    }

    /// Whether the line is shown at all.
    pub fn shown(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Replaces the line (and turns the spinner).
    pub fn set(&self, line: impl Into<String>) {
        self.bar.set_message(line.into());
        self.bar.tick();
    }

    /// Erases the line for good.
    pub fn finish(&self) {
        crate::util::PROGRESS_LINE.store(false, std::sync::atomic::Ordering::Relaxed);
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under `cargo test` stderr is captured (not a terminal): nothing is drawn, nothing fails.
    #[test]
    fn hidden_without_a_terminal() {
        let p = Progress::new(true);
        assert_eq!(p.shown(), std::io::stderr().is_terminal());
        p.set("tracer: 1s");
        p.finish();
        assert!(!Progress::new(false).shown());
    }
}
