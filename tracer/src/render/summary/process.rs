//! One process's section of the summary: what it is, how much is outstanding and how well it is
//! seen (coverage, watch mode's samples), its suspects; then its census, resident memory and
//! stacks.

use std::fmt::Write as _;

use super::format::{coverage_warning, human_bytes, suspect_line, thousands};
use super::{census, resident, stacks};
use crate::report::{Coverage, Mode, ProcReport, Report, Verdict, MIN_CHECKPOINTS};
use crate::text::clean;

/// Watch mode with allocator windows (checkpoints follow the windows).
fn windowed(r: &Report) -> bool {
    matches!(r.budget, Some((_, b)) if b > 0.0)
}

/// The section of process `p` of report `r`.
pub(super) fn section(o: &mut String, r: &Report, p: &ProcReport) {
    let _ = writeln!(o);
    let _ = writeln!(o, "{} - {}", clean(&p.title()), clean(&p.interpreter));
    match (p.exited_after, &p.execd) {
        (Some(after), Some(into)) => {
            let _ = writeln!(
                o,
                "  exec'd into {} after {:.1}s: figures are up to the exec",
                clean(into),
                after.as_secs_f64()
            );
        }
        (Some(after), None) => {
            let _ = writeln!(
                o,
                "  exited after {:.1}s of tracing: descriptors as open at its exit, memory as of its last snapshot",
                after.as_secs_f64()
            );
        }
        _ => {}
    }
    if p.coverage == Coverage::CensusOnly {
        let _ = writeln!(o, "  open descriptors: {}", p.open_fds);
    } else {
        let _ = writeln!(
            o,
            "  outstanding: {} in {} allocations; open descriptors: {}",
            human_bytes(p.total_bytes),
            thousands(p.total_allocs),
            p.open_fds
        );
    }
    if let Some(w) = &p.warning {
        let _ = writeln!(o, "  {}", clean(w));
    }
    // Exact mode against the allocators' own account: what share of the memory in use it saw.
    if let (Mode::Exact, Some(seen)) = (r.mode, &p.in_use_seen) {
        let _ = writeln!(
            o,
            "  exact mode saw {} outstanding of the {} the allocators hold in use ({:.0}%){}",
            human_bytes(p.total_bytes),
            human_bytes(seen.in_use),
            seen.pct,
            if !seen.most {
                ": the rest was allocated before tracer attached, or through a fast path this build inlines (the split of resident memory below covers it all)"
            } else {
                ""
            }
        );
    }
    match coverage_warning(&p.coverage) {
        Some(w) => {
            let _ = writeln!(o, "  {w}");
        }
        None => {
            if let Coverage::Good {
                calls_per_cpu_s: Some(rate),
            } = p.coverage
            {
                let _ = writeln!(
                    o,
                    "  coverage: good ({} allocator calls in {:.1} CPU-seconds of the target, {rate:.0}/s)",
                    thousands(p.alloc_calls),
                    p.cpu_seconds
                );
            }
        }
    }
    if p.coverage == Coverage::CensusOnly {
        let judged = if p.warning.is_some() {
            "no heap census for this interpreter (see the warning): only descriptors are judged"
        } else {
            "memory is judged by the heap census below"
        };
        let _ = writeln!(
            o,
            "  watch mode: no allocator probe (no stall); {judged}; --budget 2 adds allocation stacks from short probe windows"
        );
    }
    if let Coverage::Windowed {
        windows,
        survivors,
        armed_pct,
        partial,
    } = &p.coverage
    {
        let _ = writeln!(
            o,
            "  watch mode: memory figures are SAMPLES: allocations seen in {windows} windows{} and still alive now ({} samples); probes armed {armed_pct:.1}% of the time{}",
            r.budget
                .map(|(w, _)| format!(" of {w:.0?}"))
                .unwrap_or_default(),
            thousands(*survivors),
            r.budget
                .map(|(_, b)| format!(" (budget {b}%)"))
                .unwrap_or_default(),
        );
        if let Some(reason) = partial {
            let _ = writeln!(
                o,
                "  WARNING: the windows see part of the allocations only: {}; memory is not judged (verdict unknown), descriptors are exact; the heap census below names what grows",
                clean(reason)
            );
        }
    }
    if p.checkpoints < MIN_CHECKPOINTS {
        let _ = writeln!(
            o,
            "  verdicts need {MIN_CHECKPOINTS} checkpoints ({}): record longer for growing/stable verdicts",
            if windowed(r) {
                "one after each window".to_string()
            } else {
                format!("one every {:.0?}", r.interval)
            }
        );
    } else if !p.suspects.is_empty() {
        let growing = p
            .suspects
            .iter()
            .filter(|s| s.trend.verdict == Verdict::Growing)
            .count();
        let _ = writeln!(
            o,
            "  leak suspects ({growing} growing, over {} checkpoints{}):",
            p.checkpoints,
            if windowed(r) {
                ", one after each window".to_string()
            } else {
                format!(" every {:.0?}", r.interval)
            }
        );
        let _ = writeln!(
            o,
            "    {:<8} {:>14} {:>11} {:>9} {:>7}  where",
            "verdict", "growth", "now", "objects", "oldest"
        );
        for s in p.suspects.iter().take(8) {
            let _ = writeln!(o, "{}", suspect_line(s));
        }
    }
    if let (Some(c), Some(reading)) = (&p.census, &p.census_reading) {
        census::section(o, c, reading);
    }
    if let Some(res) = &p.resident {
        resident::section(o, res);
    }
    stacks::section(o, r, p);
}
