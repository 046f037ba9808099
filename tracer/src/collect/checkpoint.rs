//! Checkpoints: every live target's last snapshot kept as a point of its series, grouped by
//! frames.

use std::collections::HashMap;

use super::Collector;
use crate::config::Mode;
use crate::frame::Frame;
use crate::snapshot::StackKey;
use crate::util::monotonic_ns;
use crate::verdict::verdict_key;

impl Collector {
    /// Records every live target's last snapshot as a checkpoint, grouped by frames.
    pub fn checkpoint(&mut self) {
        let at = self.started.elapsed().as_secs_f64();
        for t in self.targets.iter_mut().filter(|t| t.exited_after.is_none()) {
            let Some(snap) = &t.last else { continue };
            let mut allocs: HashMap<Vec<Frame>, (u64, u64)> = HashMap::new();
            let mut fds: HashMap<Vec<Frame>, u64> = HashMap::new();
            // Watch mode counts the survivors of earlier windows only: the ones the last window
            // just took are alive by construction, and their number is noise, not growth.
            let mut by_stack: HashMap<StackKey, (u64, u64)> = HashMap::new();
            if self.mode == Mode::Watch {
                let now = monotonic_ns();
                let min_age = self.min_age.as_nanos() as u64;
                for s in t.watch.survivors.values().filter(|s| {
                    s.ts_ns < t.watch.window_opened_ns && now.saturating_sub(s.ts_ns) >= min_age
                }) {
                    let e = by_stack.entry(s.stack).or_default();
                    e.0 += s.size;
                    e.1 += 1;
                }
            } else {
                by_stack.extend(snap.allocs.iter().map(|(k, g)| (*k, (g.bytes, g.count))));
            }
            for (k, (bytes, count)) in by_stack {
                let frames = verdict_key(snap.frames.get(&k).cloned().unwrap_or_default());
                let e = allocs.entry(frames).or_default();
                e.0 += bytes;
                e.1 += count;
            }
            for f in &snap.fds {
                *fds.entry(snap.fd_site(f)).or_default() += 1;
            }
            t.history.push(at, allocs, fds);
        }
    }
}
