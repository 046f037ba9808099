//! The heap census's section of the summary: what grows (containers, types, asyncio tasks),
//! where it is used and fed, as the report reads it.

use std::fmt::Write as _;

use super::format::{holds_text, human_bytes, short_stack, thousands};
use crate::report::census::{CensusReport, TasksReport};
use crate::report::{AwaitedBy, CensusReading, Verdict};
use crate::text::clean;

pub(super) fn section(o: &mut String, c: &CensusReport, reading: &CensusReading) {
    if let Some(e) = &c.error {
        let _ = writeln!(o, "  heap census: not taken: {}", clean(e));
        return;
    }
    if c.passes == 0 {
        return;
    }
    let _ = writeln!(
        o,
        "  heap census (gc-tracked objects read from outside; {} passes{}, the last took {:.0} ms): {} objects; resident memory {} ({}{})",
        c.passes,
        if c.partial > 0 {
            format!(", {} partial", c.partial)
        } else {
            String::new()
        },
        c.last_ms,
        thousands(c.objects),
        human_bytes(c.rss),
        c.rss_trend.verdict,
        if c.rss_trend.verdict == Verdict::Growing {
            format!(", +{}/min", human_bytes(c.rss_trend.per_min.max(0.0) as u64))
        } else {
            String::new()
        }
    );
    // What grows, and the named others (module globals: the caches a reader knows).
    for (i, k) in c
        .containers
        .iter()
        .enumerate()
        .filter(|(_, k)| k.named || k.trend.verdict == Verdict::Growing)
        .take(5)
    {
        let growth = if k.trend.verdict == Verdict::Growing {
            format!("+{} items/min", thousands(k.trend.per_min.max(0.0) as u64))
        } else {
            String::new()
        };
        let rate = match (&k.holds, k.trend.verdict) {
            (Some(h), Verdict::Growing) => format!(
                " (~{}/min)",
                human_bytes((k.trend.per_min.max(0.0) * h.mean_deep_bytes) as u64)
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "    {:<8} {:>18}  {} ({}, {} items){rate}{}",
            k.trend.verdict.to_string(),
            growth,
            clean(&k.name),
            clean(&k.type_name),
            thousands(k.len),
            k.holds
                .as_ref()
                .map(|h| format!("; {}", holds_text(h)))
                .unwrap_or_default()
        );
        let verb = match (k.root, k.name.starts_with("suspended ")) {
            ("local", true) => "suspended at",
            ("local", false) => "in the frame running",
            _ => "used at",
        };
        let shown = if k.trend.verdict == Verdict::Growing {
            3
        } else {
            1
        };
        for u in k.uses.iter().take(shown) {
            let _ = writeln!(o, "    {:>29}{verb} {u}", "");
        }
        // Where the application feeds it, when the uses above do not say (a library's line).
        if let Some(fed) = reading
            .fed_from(i)
            .filter(|f| f.via.is_some() || !k.uses.contains(&f.app_frame))
        {
            let via = fed
                .via
                .as_ref()
                .map(|b| format!(" via {b}"))
                .unwrap_or_default();
            let _ = writeln!(o, "    {:>29}fed from {}{via}", "", fed.app_frame);
        }
        if k.trend.verdict == Verdict::Growing {
            if let Some((stack, _)) = k.stacks.first() {
                let _ = writeln!(o, "    {:>29}stack: {}", "", short_stack(stack, 6));
            }
        }
    }
    if reading.grows_out_of_reach {
        let _ = writeln!(
            o,
            "    resident memory grows but nothing the census reaches does: the split of resident memory below says which part grows, and where the heap grew; --budget 2 (allocation stacks) or a short exact recording say more"
        );
    }
    let growing: Vec<String> = c
        .types
        .iter()
        .filter(|t| t.trend.verdict == Verdict::Growing)
        .take(5)
        .map(|t| {
            format!(
                "{} {:+.0}/min (now {})",
                clean(&t.name),
                t.trend.per_min,
                thousands(t.count)
            )
        })
        .collect();
    if !growing.is_empty() {
        let _ = writeln!(o, "    objects growing by type: {}", growing.join(", "));
    }
    if let Some(t) = &c.tasks {
        tasks(o, t, reading);
    }
    for t in c
        .types
        .iter()
        .filter(|t| t.trend.verdict == Verdict::Growing)
    {
        if let Some(path) = &t.held_at {
            let _ = writeln!(
                o,
                "      {}: one is held at {}",
                clean(&t.name),
                clean(path)
            );
        }
    }
}

/// asyncio's pending tasks: piling up (a leak of its own kind) or not, by coroutine.
fn tasks(o: &mut String, t: &TasksReport, reading: &CensusReading) {
    let head = if t.trend.verdict == Verdict::Growing {
        format!(
            "asyncio tasks piling up: {} pending, {:+.0}/min",
            thousands(t.pending),
            t.trend.per_min
        )
    } else {
        format!(
            "asyncio tasks pending: {} ({})",
            thousands(t.pending),
            t.trend.verdict
        )
    };
    let _ = writeln!(o, "    {head}");
    for (i, g) in t
        .by_coroutine
        .iter()
        .enumerate()
        .take(5)
        .filter(|(_, g)| g.count > 0)
    {
        let growth = if g.trend.verdict == Verdict::Growing {
            format!("{:+.0}/min", g.trend.per_min)
        } else {
            "-".into()
        };
        let by = match reading.awaited_by(i) {
            Some(AwaitedBy::Task(f)) => format!(", awaited by {}", clean(&f.to_string())),
            Some(AwaitedBy::NoTask) => ", awaited by no task".into(),
            None => String::new(),
        };
        let _ = writeln!(
            o,
            "      {:<8} {:>9} {:>7} tasks waiting in {}{by}",
            g.trend.verdict.to_string(),
            growth,
            thousands(g.count),
            clean(&g.coroutine.to_string())
        );
    }
}
