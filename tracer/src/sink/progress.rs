//! The progress line on stderr (when it is a terminal): time, totals, suspects growing so far,
//! rewritten in place at every tick and erased when the recording stops. Drawn by indicatif:
//! hidden when stderr is not a terminal, never failing the recording (a closed or full stderr
//! is ignored); messages (`say!`) print above it through indicatif's `suspend`.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Sink;
use crate::report::Report;

pub struct Progress {
    bar: ProgressBar,
}

impl Default for Progress {
    /// The line on stderr when it is a terminal, else one that shows nothing.
    fn default() -> Progress {
        if std::io::stderr().is_terminal() {
            Progress::on(ProgressDrawTarget::stderr())
        } else {
            Progress::on(ProgressDrawTarget::hidden())
        }
    }
}

impl Progress {
    /// The line drawn on `target`; messages print above it while it is shown.
    fn on(target: ProgressDrawTarget) -> Progress {
        let bar = ProgressBar::with_draw_target(None, target);
        let style = ProgressStyle::with_template("{spinner} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        if !bar.is_hidden() {
            crate::util::set_progress_line(Some(bar.clone()));
        }
        Progress { bar }
    }

    /// Erases the line for good (messages print as they are from here on).
    fn erase(&self) {
        if !self.bar.is_hidden() {
            crate::util::set_progress_line(None);
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.erase();
    }
}

impl Sink for Progress {
    fn wants_ticks(&self) -> bool {
        true
    }

    /// Replaces the line (and turns the spinner).
    fn tick(&mut self, r: &Report) {
        self.bar.set_message(line(r));
        self.bar.tick();
    }

    fn stop(&mut self) {
        self.erase();
    }
}

/// One line of progress: time, totals, suspects growing so far.
fn line(r: &Report) -> String {
    let bytes: u64 = r.procs.iter().map(|p| p.total_bytes).sum();
    let fds: u64 = r.procs.iter().map(|p| p.open_fds).sum();
    let growing = r
        .procs
        .iter()
        .flat_map(|p| &p.suspects)
        .filter(|s| s.trend.verdict == crate::report::Verdict::Growing)
        .count();
    format!(
        "tracer: {:.0}s, {} process(es): {} outstanding{}, {} open descriptors, {} growing",
        r.elapsed.as_secs_f64(),
        r.procs.len(),
        crate::render::summary::human_bytes(bytes),
        if r.budget.is_some() { " (sampled)" } else { "" },
        fds,
        growing
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    /// A terminal that keeps what is on its screen: rows of text and a cursor, moved and
    /// cleared as a terminal would.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<(Vec<String>, usize)>>);

    impl Screen {
        /// The rows on screen, trailing blanks cut, empty rows at the bottom left out.
        fn rows(&self) -> Vec<String> {
            let s = self.0.lock().unwrap();
            let mut rows: Vec<String> = s.0.iter().map(|r| r.trim_end().to_string()).collect();
            while rows.last().is_some_and(|r| r.is_empty()) {
                rows.pop();
            }
            rows
        }

        fn edit(&self, f: impl FnOnce(&mut Vec<String>, &mut usize)) -> std::io::Result<()> {
            let mut s = self.0.lock().unwrap();
            let (rows, at) = &mut *s;
            while rows.len() <= *at {
                rows.push(String::new());
            }
            f(rows, at);
            Ok(())
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            100
        }
        fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
            self.edit(|_, at| *at = at.saturating_sub(n))
        }
        fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
            self.edit(|_, at| *at += n)
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)?;
            self.edit(|_, at| *at += 1)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.edit(|rows, at| rows[*at].push_str(s))
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.edit(|rows, at| rows[*at].clear())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn report(secs: u64) -> Report {
        Report {
            mode: Mode::Watch,
            interval: Duration::from_secs(10),
            budget: Some((Duration::from_millis(200), 2.0)),
            elapsed: Duration::from_secs(secs),
            started_unix: 0.0,
            min_age: Duration::ZERO,
            procs: vec![],
            health: Default::default(),
            places: Default::default(),
        }
    }

    /// The line as drawn: a spinner, then the report's figures.
    fn drawn(row: &str) -> &str {
        let (spinner, text) = row.split_once(' ').unwrap_or(("", row));
        assert_eq!(spinner.chars().count(), 1, "a spinner before {row:?}");
        text
    }

    /// What the line shows, rewritten in place at each tick; a message prints on a row of its
    /// own above it (never on the line itself), the line drawn again below; once stopped, the
    /// line is gone and messages print as they are.
    #[test]
    fn the_line_shows_the_report_and_messages_print_above_it() {
        let screen = Screen::default();
        let mut p = Progress::on(ProgressDrawTarget::term_like(Box::new(screen.clone())));
        p.tick(&report(3));
        p.tick(&report(12));
        let rows = screen.rows();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            drawn(&rows[0]),
            "tracer: 12s, 0 process(es): 0 B outstanding (sampled), 0 open descriptors, 0 growing"
        );
        let message = |text: &'static str| {
            let screen = screen.clone();
            move || indicatif::TermLike::write_line(&screen, text)
        };
        crate::util::above_progress_line(message("tracer: WARNING: one")).unwrap();
        crate::util::above_progress_line(message("tracer: WARNING: two")).unwrap();
        let rows = screen.rows();
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[..2], ["tracer: WARNING: one", "tracer: WARNING: two"]);
        assert!(drawn(&rows[2]).starts_with("tracer: 12s, "), "{rows:?}");
        p.stop();
        crate::util::above_progress_line(message("tracer: done")).unwrap();
        assert_eq!(
            screen.rows(),
            [
                "tracer: WARNING: one",
                "tracer: WARNING: two",
                "tracer: done"
            ]
        );
    }
}
