//! The resident memory section of the summary: each part with its verdict, and what the split
//! says (the report's reading).

use std::fmt::Write as _;

use super::format::{human_bytes, thousands};
use crate::report::resident::{Reading, ResidentReport};
use crate::report::Verdict;
use crate::resident::Part;
use crate::text::clean;

/// Where resident memory is: each part with its verdict, and what the split says.
pub(super) fn section(o: &mut String, r: &ResidentReport) {
    let _ = writeln!(
        o,
        "  resident memory {} ({}{}; read from outside {} times, the last took {} ms):",
        human_bytes(r.rss),
        r.trend.verdict,
        if r.trend.verdict == Verdict::Growing {
            format!(", +{}/min", human_bytes(r.trend.per_min.max(0.0) as u64))
        } else {
            String::new()
        },
        r.readings,
        r.last_ms
    );
    for p in r.parts.iter().filter(|p| p.bytes > 0) {
        let rate = if p.trend.verdict == Verdict::Growing {
            format!("+{}/min", human_bytes(p.trend.per_min.max(0.0) as u64))
        } else {
            String::new()
        };
        let detail = match p.part {
            Part::SmallObjects if r.pools.arenas > 0 => format!(
                "; {} arenas of pools of {}",
                r.pools.arenas,
                human_bytes(r.pools.pool_size)
            ),
            Part::MallocFree if r.heaps.free_chunks > 0 => format!(
                "; {} free chunks, {} of them whole pages malloc_trim(0) would give back",
                thousands(r.heaps.free_chunks),
                human_bytes(r.heaps.trimmable)
            ),
            Part::LargeBlocks => format!("; {} blocks", r.heaps.mmapped),
            Part::ThreadStacks => format!(
                "; {} thread{}",
                r.threads,
                if r.threads == 1 { "" } else { "s" }
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "    {:>10}  {:<8} {:>14}  {}{detail}",
            human_bytes(p.bytes),
            p.trend.verdict.to_string(),
            rate,
            p.part.label()
        );
    }
    match r.reading {
        Some(Reading::Grows(part)) => {
            let why = match part {
                Part::SmallObjects | Part::MallocInUse | Part::LargeBlocks => {
                    "memory in use grows: objects or buffers are kept (a leak, or a cache that fills)"
                }
                Part::SmallFree | Part::MallocFree => {
                    "free space grows while what is in use does not: fragmentation, not a leak"
                }
                Part::OtherAnonymous => {
                    "memory outside Python's and malloc's heaps grows: an extension's own allocator, or anonymous mmaps"
                }
                Part::ThreadStacks => "thread stacks grow: threads pile up",
                Part::Code | Part::FilesShared => "mapped files or shared memory grow",
            };
            let _ = writeln!(o, "    reading: {why}");
        }
        Some(Reading::Fragmented {
            free,
            trimmable,
            worth_trimming,
        }) => {
            let _ = writeln!(
                o,
                "    reading: nothing grows; {:.0}% of resident memory is free space the allocators keep (fragmentation, not a leak){}",
                free as f64 * 100.0 / r.rss.max(1) as f64,
                if worth_trimming {
                    format!("; malloc_trim(0) would give back {}", human_bytes(trimmable))
                } else {
                    String::new()
                }
            );
        }
        None => {}
    }
    for n in &r.notes {
        let _ = writeln!(o, "    note: {}", clean(n));
    }
}
