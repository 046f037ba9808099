//! The short human summary printed on stdout (and kept as summary.txt).

use std::fmt::Write as _;
use std::path::Path;

use crate::collect::Mode;
use crate::python::census::{CensusReport, Holds};
use crate::report::{Coverage, Report, Resource, Suspect};
use crate::trend::{Verdict, MIN_CHECKPOINTS};

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The innermost frames of a stack, leaf first, for one line of text.
fn short_stack(frames: &[String], n: usize) -> String {
    if frames.is_empty() {
        return "[no stack]".into();
    }
    let mut v: Vec<&str> = frames.iter().rev().take(n).map(String::as_str).collect();
    if frames.len() > n {
        v.push("...");
    }
    v.join(" <- ")
}

/// The innermost Python frame of a stack ("function (file.py:LINE)"), or its leaf.
pub fn python_line(frames: &[String]) -> &str {
    frames
        .iter()
        .rev()
        .find(|f| f.contains(".py:") && f.ends_with(')'))
        .or_else(|| frames.last())
        .map(String::as_str)
        .unwrap_or("[no stack]")
}

fn amount(resource: Resource, v: f64) -> String {
    match resource {
        Resource::Memory => human_bytes(v.max(0.0) as u64),
        Resource::Descriptors => format!("{:.0} fds", v),
    }
}

pub fn suspect_line(s: &Suspect) -> String {
    let rate = if s.trend.verdict == Verdict::Growing {
        format!("+{}/min", amount(s.resource, s.trend.per_min))
    } else {
        "-".into()
    };
    let what = match s.resource {
        Resource::Memory => python_line(&s.frames).to_string(),
        Resource::Descriptors => {
            let kind = s.frames.last().map(String::as_str).unwrap_or("");
            let site = python_line(&s.frames[..s.frames.len().saturating_sub(1)]);
            format!("{site} {kind}")
        }
    };
    format!(
        "    {:<8} {:>14} {:>11} {:>9} {:>7}  {}",
        s.trend.verdict.to_string(),
        rate,
        amount(s.resource, s.now as f64),
        match s.resource {
            Resource::Memory => thousands(s.count),
            Resource::Descriptors => "-".into(),
        },
        s.oldest_age
            .map(|a| format!("{:.0}s", a.as_secs_f64()))
            .unwrap_or_else(|| "-".into()),
        what
    )
}

/// The one-line coverage warning for a process, if its allocation view is incomplete.
pub fn coverage_warning(c: &Coverage) -> Option<String> {
    match c {
        Coverage::Good { .. } | Coverage::Sampled { .. } | Coverage::CensusOnly => None,
        Coverage::Low { reason } => Some(format!(
            "WARNING: allocation coverage is LOW: {reason}; outstanding bytes below are a lower bound (descriptors are exact)"
        )),
        Coverage::None { reason } => {
            Some(format!("WARNING: allocations are NOT traced: {reason} (descriptors are exact)"))
        }
    }
}

/// What a container holds, in a few words: "dict x16, ~232 B each".
pub fn holds_text(h: &Holds) -> String {
    let types: Vec<String> = h
        .types
        .iter()
        .take(3)
        .map(|(t, n)| format!("{t} x{n}"))
        .collect();
    let deep = if h.mean_deep_bytes > h.mean_bytes {
        format!(
            ", ~{} with the str/bytes/numbers they hold",
            human_bytes(h.mean_deep_bytes as u64)
        )
    } else {
        String::new()
    };
    format!(
        "newest {}: {}, ~{} each{deep}",
        h.sampled,
        types.join(", "),
        human_bytes(h.mean_bytes as u64)
    )
}

fn census(o: &mut String, c: &CensusReport) {
    if let Some(e) = &c.error {
        let _ = writeln!(o, "  heap census: not taken: {e}");
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
    for k in c
        .containers
        .iter()
        .filter(|k| k.named || k.trend.verdict == Verdict::Growing)
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
            k.name,
            k.type_name,
            thousands(k.len),
            k.holds
                .as_ref()
                .map(|h| format!("; {}", holds_text(h)))
                .unwrap_or_default()
        );
        let verb = if k.root == "local" {
            "in the frame running"
        } else {
            "used at"
        };
        let shown = if k.trend.verdict == Verdict::Growing {
            3
        } else {
            1
        };
        for u in k.uses.iter().take(shown) {
            let _ = writeln!(o, "    {:>29}{verb} {u}", "");
        }
        if k.trend.verdict == Verdict::Growing {
            if let Some((stack, _)) = k.stacks.first() {
                let _ = writeln!(o, "    {:>29}stack: {}", "", short_stack(stack, 6));
            }
        }
    }
    let grows = |v: Verdict| v == Verdict::Growing;
    if grows(c.rss_trend.verdict)
        && !c.containers.iter().any(|k| grows(k.trend.verdict))
        && !c.types.iter().any(|t| grows(t.trend.verdict))
    {
        let _ = writeln!(
            o,
            "    resident memory grows but nothing the census reaches does: look with --budget 2 (allocation stacks) or a short exact recording"
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
                t.name,
                t.trend.per_min,
                thousands(t.count)
            )
        })
        .collect();
    if !growing.is_empty() {
        let _ = writeln!(o, "    objects growing by type: {}", growing.join(", "));
    }
}

/// Watch mode with allocator windows (checkpoints follow the windows).
fn windowed(r: &Report) -> bool {
    matches!(r.budget, Some((_, b)) if b > 0.0)
}

pub fn render(r: &Report, dir: Option<&Path>) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "tracer: traced {} process(es) for {:.1}s{}",
        r.procs.len(),
        r.elapsed.as_secs_f64(),
        if r.min_age.is_zero() {
            String::new()
        } else {
            format!(", reporting what is older than {:?}", r.min_age)
        }
    );
    for p in &r.procs {
        let _ = writeln!(o);
        let _ = writeln!(o, "{} - {}", p.title(), p.interpreter);
        match (p.exited_after, &p.execd) {
            (Some(after), Some(into)) => {
                let _ = writeln!(
                    o,
                    "  exec'd into {into} after {:.1}s: figures are up to the exec",
                    after.as_secs_f64()
                );
            }
            (Some(after), None) => {
                let _ = writeln!(
                    o,
                    "  exited after {:.1}s of tracing: figures are from its last checkpoint",
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
            let _ = writeln!(
                o,
                "  watch mode: no allocator probe (no stall); memory is judged by the heap census below; --budget 2 adds allocation stacks from short probe windows"
            );
        }
        if let Coverage::Sampled {
            windows,
            samples,
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
                thousands(*samples),
                r.budget
                    .map(|(_, b)| format!(" (budget {b}%)"))
                    .unwrap_or_default(),
            );
            if let Some(reason) = partial {
                let _ = writeln!(
                    o,
                    "  WARNING: the windows see part of the allocations only: {reason}; memory is not judged (verdict unknown), descriptors are exact; the heap census below names what grows"
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
        if let Some(c) = &p.census {
            census(&mut o, c);
        }
        if !p.allocs.is_empty() {
            let _ = writeln!(
                o,
                "  top {} stacks (outstanding):",
                if r.mode == Mode::Watch {
                    "heap growth"
                } else {
                    "allocation"
                }
            );
            for a in p.allocs.iter().take(5) {
                let _ = writeln!(
                    o,
                    "    {:>10} {:>9} allocs  oldest {:>5.0}s  {}",
                    human_bytes(a.bytes),
                    thousands(a.count),
                    a.oldest_age.as_secs_f64(),
                    short_stack(&a.frames, 4)
                );
            }
        }
        if !p.fds.is_empty() {
            let _ = writeln!(o, "  open descriptors by stack:");
            for f in p.fds.iter().take(8) {
                let _ = writeln!(o, "    {:>6}  {}", f.count, short_stack(&f.frames, 4));
            }
        }
    }
    let h = &r.health;
    let _ = writeln!(o);
    match r.mode {
        Mode::Exact => {
            let _ = writeln!(
                o,
                "health: {} allocator calls, {} frees seen; dropped: {} allocations (map full), {} descriptors (map full); {} stacks lost",
                thousands(h.alloc_calls),
                thousands(h.free_calls),
                h.alloc_map_full,
                h.fd_map_full,
                h.stacks_lost
            );
        }
        Mode::Watch => {
            let _ = writeln!(
                o,
                "health: {} allocator calls seen in windows; dropped: {} allocations, {} descriptors (map full); {} stacks lost",
                thousands(h.alloc_calls),
                h.alloc_map_full,
                h.fd_map_full,
                h.stacks_lost
            );
        }
    }
    if let Some(d) = dir {
        let _ = writeln!(o, "reports in {}", d.display());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn stacks_leaf_first() {
        let f: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(short_stack(&f, 2), "c <- b <- ...");
        assert_eq!(short_stack(&[], 2), "[no stack]");
    }
}
