//! The progress line on stderr (when it is a terminal): time, totals, suspects growing so far,
//! rewritten in place at every tick and erased when the recording stops.

use super::Sink;
use crate::report::Report;

pub struct Progress {
    line: crate::progress::Progress,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            line: crate::progress::Progress::new(true),
        }
    }
}

impl Sink for Progress {
    fn wants_ticks(&self) -> bool {
        true
    }

    fn tick(&mut self, r: &Report) {
        self.line.set(line(r));
    }

    fn stop(&mut self) {
        self.line.finish();
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
