//! The reports of the entries that closed (exit or exec), kept for every report after.

use super::process::process_report;
use super::{AppPaths, ProcReport, Verdict};
use crate::snapshot::TargetView;

/// Most closed entries (processes that exited or exec'd) kept for the reports, by default.
pub const MAX_CLOSED: usize = 500;

/// The reports of the entries that closed (exit or exec), made once when they close: their
/// figures no longer change, and what they were made from is dropped. At most `keep` are kept:
/// a host that starts processes all day must not grow the tracer without bound.
#[derive(Debug, Clone)]
pub struct Archive {
    /// (entry number, report), oldest entry first.
    pub(super) closed: Vec<(u64, ProcReport)>,
    pub(super) keep: usize,
    pub(super) dropped: u64,
    /// How the reports place frames (`--app-path`).
    pub(super) places: AppPaths,
}

impl Archive {
    /// `places`: how every report (the closed entries' and the live ones') places frames.
    pub fn new(keep: usize, places: AppPaths) -> Archive {
        Archive {
            closed: Vec::new(),
            keep,
            dropped: 0,
            places,
        }
    }

    /// Adds the final report of an entry that closed; then, when more than `keep` are kept, the
    /// ones with nothing growing go first, oldest first; then the oldest. Their number is
    /// reported.
    pub fn add(&mut self, t: &TargetView, probes_off: bool) {
        let r = process_report(t, probes_off, &self.places);
        let at = self.closed.partition_point(|(seq, _)| *seq < t.seq);
        self.closed.insert(at, (t.seq, r));
        let n = self.closed.len();
        if n <= self.keep {
            return;
        }
        let mut excess = n - self.keep;
        let growing = |r: &ProcReport| {
            r.suspects
                .iter()
                .any(|s| s.trend.verdict == Verdict::Growing)
        };
        for quiet_only in [true, false] {
            self.closed.retain(|(_, r)| {
                let drop = excess > 0 && !(quiet_only && growing(r));
                if drop {
                    excess -= 1;
                }
                !drop
            });
        }
        self.dropped += (n - self.keep) as u64;
    }
}
