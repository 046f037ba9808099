//! The report of one entry (a live process's, or the final one of an entry that closed): its
//! stacks and descriptors, how much of its allocations the hooks see, its suspects and readings.

use std::time::Duration;

use super::suspects::{growth, suspects, watch_biased};
use super::{
    census_reading, descriptors, resident, AllocStack, AppPaths, Coverage, FdStack, ProcReport,
};
use crate::snapshot::{fd_label, HookCoverage, TargetView};
use crate::util::monotonic_ns;

/// Below this many allocator calls per CPU-second of the target, the hooks are missing most of
/// the heap: an interpreter running Python code allocates far more often (hundreds of thousands of
/// times per second untraced; ~30,000+ per second even under the ~20 us cost of each probe).
const LOW_CALL_RATE: f64 = 2000.0;
/// Judge the call rate only once the target has used this much CPU.
const MIN_CPU_TO_JUDGE: f64 = 0.3;

pub fn assess_coverage(hooks: &HookCoverage, alloc_calls: u64, cpu_seconds: f64) -> Coverage {
    if !hooks.hooked {
        return Coverage::None {
            reason: hooks.notes.clone(),
        };
    }
    let rate = (cpu_seconds >= MIN_CPU_TO_JUDGE).then(|| alloc_calls as f64 / cpu_seconds);
    if hooks.inlined_fast_path {
        return Coverage::Low {
            reason: format!(
                "this build inlines pymalloc into its callers (LTO/PGO): the hooks only see allocations that miss the inlined fast path{}",
                rate.map(|r| format!(" (measured {r:.0} allocator calls per CPU-second)")).unwrap_or_default()
            ),
        };
    }
    match rate {
        Some(r) if r < LOW_CALL_RATE => Coverage::Low {
            reason: format!(
                "only {alloc_calls} allocator calls seen in {cpu_seconds:.1} CPU-seconds of the target ({r:.0}/s): most allocations bypass the hooked functions"
            ),
        },
        r => Coverage::Good { calls_per_cpu_s: r },
    }
}

/// The report of one entry (a live process's, or the final one of an entry that closed).
pub fn process_report(t: &TargetView, probes_off: bool, paths: &AppPaths) -> ProcReport {
    let empty = Default::default();
    let snap = t.last.unwrap_or(&empty);
    let now = monotonic_ns();
    let frames_of = |k: (i32, u64)| snap.frames.get(&k).cloned().unwrap_or_default();
    let mut allocs: Vec<AllocStack> = snap
        .allocs
        .iter()
        .map(|(k, g)| AllocStack {
            frames: frames_of(*k),
            bytes: g.bytes,
            count: g.count,
            oldest_age: Duration::from_nanos(now.saturating_sub(g.oldest_ts)),
        })
        .collect();
    allocs.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.frames.cmp(&b.frames)));
    let mut fds: Vec<FdStack> = Vec::new();
    for f in &snap.fds {
        let mut frames = frames_of((f.info.ustack, f.info.pystack));
        frames.push(fd_label(f));
        match fds.iter_mut().find(|s| s.frames == frames) {
            Some(s) => s.count += 1,
            None => fds.push(FdStack { frames, count: 1 }),
        }
    }
    fds.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.frames.cmp(&b.frames)));
    // The pid's counters include the programs it ran before an exec.
    let alloc_calls = snap.stats.alloc_calls.saturating_sub(t.alloc_calls_base);
    let cpu_seconds = t.cpu_seconds;
    let mut r = ProcReport {
        pid: t.pid,
        comm: t.comm.to_string(),
        container: t.container.map(str::to_string),
        nspid: t.nspid,
        interpreter: t.interpreter.clone(),
        exited_after: t.exited_after,
        execd: t.execd.map(str::to_string),
        image: 0,
        total_bytes: allocs.iter().map(|a| a.bytes).sum(),
        total_allocs: allocs.iter().map(|a| a.count).sum(),
        open_fds: snap.fds.len() as u64,
        coverage: if probes_off {
            Coverage::CensusOnly
        } else if t.windows > 0 {
            Coverage::Windowed {
                windows: t.windows,
                survivors: t.survivors,
                armed_pct: 100.0 * t.armed.as_secs_f64() / t.traced_for.as_secs_f64().max(1e-9),
                partial: match assess_coverage(&t.hooks, 0, 0.0) {
                    Coverage::Low { reason } | Coverage::None { reason } => Some(reason),
                    _ => None,
                },
            }
        } else {
            assess_coverage(&t.hooks, alloc_calls, cpu_seconds)
        },
        alloc_calls,
        cpu_seconds,
        suspects: suspects(t, &allocs, now, t.windows > 0, watch_biased(t), paths),
        checkpoints: t.history.len(),
        growth: growth(t),
        census: t.census.as_ref().map(super::census::judge),
        resident: resident::report(t.resident),
        heap_growth: resident::heap_growth(snap),
        warning: t.warning.clone(),
        fd_sites: descriptors::fd_sites(&fds),
        allocs,
        fds,
        census_reading: None,
        in_use_seen: None,
    };
    // What the report reads in the census's findings and the split of resident memory.
    r.census_reading = r.census.as_ref().map(|c| census_reading::read(c, paths));
    r.in_use_seen = match (&r.resident, &r.coverage) {
        (_, Coverage::CensusOnly) | (None, _) => None,
        (Some(res), _) => resident::in_use_seen(res, r.total_bytes),
    };
    r
}
