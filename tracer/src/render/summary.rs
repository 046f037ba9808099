//! The short human summary printed on stdout (and kept as summary.txt).

use std::fmt::Write as _;
use std::path::Path;

pub use crate::frame::python_line;
use crate::frame::Frame;
use crate::report::census::{CensusReport, Holds};
use crate::report::Mode;
use crate::report::{fed_from, AppPaths, Coverage, Report, Resource, Suspect};
use crate::report::{Verdict, MIN_CHECKPOINTS};
use crate::text::clean;

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
fn short_stack(frames: &[Frame], n: usize) -> String {
    if frames.is_empty() {
        return "[no stack]".into();
    }
    let mut v: Vec<String> = frames.iter().rev().take(n).map(Frame::to_string).collect();
    if frames.len() > n {
        v.push("...".into());
    }
    v.join(" <- ")
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
        Resource::Memory => python_line(&s.frames),
        Resource::Descriptors => {
            let kind = s.frames.last().map(Frame::to_string).unwrap_or_default();
            let site = python_line(&s.frames[..s.frames.len().saturating_sub(1)]);
            format!("{site} {kind}")
        }
    };
    format!(
        "    {:<8} {:>14} {:>11} {:>9} {:>7}  {}{}",
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
        what,
        via_text(s)
    )
}

/// "  via getLogger (logging/__init__.py:1403)": the library line below a suspect's application
/// frame that holds the most, and how many others there are.
pub fn via_text(s: &Suspect) -> String {
    let Some(v) = s.via.first() else {
        return String::new();
    };
    let more = if s.via.len() > 1 {
        format!(" (+{} more)", s.via.len() - 1)
    } else {
        String::new()
    };
    format!("  via {}{more}", python_line(&v.frames))
}

/// The one-line coverage warning for a process, if its allocation view is incomplete.
pub fn coverage_warning(c: &Coverage) -> Option<String> {
    match c {
        Coverage::Good { .. } | Coverage::Sampled { .. } | Coverage::CensusOnly => None,
        Coverage::Low { reason } => Some(format!(
            "WARNING: allocation coverage is LOW: {}; outstanding bytes below are a lower bound (descriptors are exact)",
            clean(reason)
        )),
        Coverage::None { reason } => {
            Some(format!("WARNING: allocations are NOT traced: {} (descriptors are exact)", clean(reason)))
        }
    }
}

/// What a container holds, in a few words: "dict x16, ~232 B each".
pub fn holds_text(h: &Holds) -> String {
    let types: Vec<String> = h
        .types
        .iter()
        .take(3)
        .map(|(t, n)| format!("{} x{n}", clean(t)))
        .collect();
    let own = if h.mean_deep_bytes > h.mean_bytes {
        format!(
            " with what each holds alone (~{} itself)",
            human_bytes(h.mean_bytes as u64)
        )
    } else {
        String::new()
    };
    let shared = if h.shared_bytes >= 1.0 {
        format!(
            ", {} shared (interned strings, small ints, objects in several items: counted once)",
            human_bytes(h.shared_bytes as u64)
        )
    } else {
        String::new()
    };
    format!(
        "newest {}: {}, ~{} each{own}{shared}",
        h.sampled,
        types.join(", "),
        human_bytes(h.mean_deep_bytes.max(h.mean_bytes) as u64)
    )
}

fn census(o: &mut String, c: &CensusReport, places: &AppPaths) {
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
        if let Some((app, below)) =
            fed_from(k, places).filter(|(a, b)| b.is_some() || !k.uses.contains(a))
        {
            let via = below.map(|b| format!(" via {b}")).unwrap_or_default();
            let _ = writeln!(o, "    {:>29}fed from {app}{via}", "");
        }
        if k.trend.verdict == Verdict::Growing {
            if let Some((stack, _)) = k.stacks.first() {
                let _ = writeln!(o, "    {:>29}stack: {}", "", short_stack(stack, 6));
            }
        }
    }
    let grows = |v: Verdict| v == Verdict::Growing;
    // Said only once the containers are judged: too few passes say nothing yet.
    if grows(c.rss_trend.verdict)
        && c.containers
            .iter()
            .all(|k| k.trend.verdict != Verdict::Unknown)
        && !c.containers.iter().any(|k| grows(k.trend.verdict))
        && !c.types.iter().any(|t| grows(t.trend.verdict))
    {
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
        tasks(o, t);
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
fn tasks(o: &mut String, t: &crate::report::census::TasksReport) {
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
    for g in t.by_coroutine.iter().take(5).filter(|g| g.count > 0) {
        let growth = if g.trend.verdict == Verdict::Growing {
            format!("{:+.0}/min", g.trend.per_min)
        } else {
            "-".into()
        };
        let by = match g.awaited_by.first() {
            Some((Some(f), n)) if *n * 2 > g.count => {
                format!(", awaited by {}", clean(&f.to_string()))
            }
            Some((None, n)) if *n * 2 > g.count => ", awaited by no task".into(),
            _ => String::new(),
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

/// Where resident memory is: each part with its verdict, and what the split says.
fn resident(o: &mut String, r: &crate::report::resident::ResidentReport) {
    use crate::report::resident::{reading, Reading};
    use crate::resident::Part;
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
    match reading(r) {
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
        Some(Reading::Fragmented { free, trimmable }) => {
            let _ = writeln!(
                o,
                "    reading: nothing grows; {:.0}% of resident memory is free space the allocators keep (fragmentation, not a leak){}",
                free as f64 * 100.0 / r.rss.max(1) as f64,
                if trimmable >= 1 << 20 {
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

/// Descriptors opened at one place (same stack, same kind of resource), whatever they name.
struct FdSite {
    /// The stack, its leaf the kind of resource (`[file]`, `[socket inet/tcp]`...).
    frames: Vec<Frame>,
    count: u64,
    /// A few of the names (paths) they refer to, and how many different names there are.
    examples: Vec<String>,
    names: usize,
}

/// Most names shown per descriptor site.
const FD_EXAMPLES: usize = 3;

/// The descriptor stacks grouped by site, most descriptors first: a leak that opens a new file
/// every time is one row, not one row per file. A site is the Python call path (as verdicts
/// see it: the native frames below it vary, or are lost when the kernel's stack map is full)
/// and the kind of resource.
fn fd_sites(fds: &[crate::report::FdStack]) -> Vec<FdSite> {
    let mut sites: Vec<FdSite> = Vec::new();
    for f in fds {
        let Some((leaf, path)) = f.frames.split_last() else {
            continue;
        };
        let name = match leaf {
            Frame::Resource { name, .. } => name.clone(),
            _ => None,
        };
        let mut frames = crate::verdict::verdict_key(path.to_vec());
        frames.push(leaf.without_name());
        let i = match sites.iter().position(|s| s.frames == frames) {
            Some(i) => i,
            None => {
                sites.push(FdSite {
                    frames,
                    count: 0,
                    examples: Vec::new(),
                    names: 0,
                });
                sites.len() - 1
            }
        };
        let site = &mut sites[i];
        site.count += f.count;
        if let Some(n) = name {
            site.names += 1;
            if site.examples.len() < FD_EXAMPLES {
                site.examples.push(n);
            }
        }
    }
    sites.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.frames.cmp(&b.frames)));
    sites
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
        if let (Mode::Exact, Some(res), false) =
            (r.mode, &p.resident, p.coverage == Coverage::CensusOnly)
        {
            use crate::resident::Part;
            let in_use: u64 = [Part::SmallObjects, Part::MallocInUse, Part::LargeBlocks]
                .iter()
                .filter_map(|x| res.part(*x))
                .map(|x| x.bytes)
                .sum();
            if in_use > 0 {
                let share = p.total_bytes as f64 * 100.0 / in_use as f64;
                let _ = writeln!(
                    o,
                    "  exact mode saw {} outstanding of the {} the allocators hold in use ({:.0}%){}",
                    human_bytes(p.total_bytes),
                    human_bytes(in_use),
                    share.min(100.0),
                    if share < 90.0 {
                        ": the rest was allocated before tracer attached, or through a fast path this build inlines (the split of resident memory below covers it all)"
                    } else {
                        ""
                    }
                );
            }
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
        if let Some(c) = &p.census {
            census(&mut o, c, &r.places);
        }
        if let Some(res) = &p.resident {
            resident(&mut o, res);
        }
        if !p.heap_growth.is_empty() {
            let _ = writeln!(
                o,
                "  the heap grew at (since attach: brk moves, mappings still mapped):"
            );
            for g in p.heap_growth.iter().take(4) {
                let _ = writeln!(
                    o,
                    "    {:>10}  {}{}",
                    human_bytes(g.brk + g.mapped),
                    short_stack(&g.frames, 4),
                    match (g.brk, g.mapped) {
                        (0, m) => format!("  (mapped {})", human_bytes(m)),
                        (b, 0) => format!("  (brk {})", human_bytes(b)),
                        (b, m) => format!("  (brk {}, mapped {})", human_bytes(b), human_bytes(m)),
                    }
                );
            }
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
            let _ = writeln!(o, "  open descriptors by site:");
            for site in fd_sites(&p.fds).iter().take(8) {
                let examples = if site.examples.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; e.g. {}{}",
                        clean(&site.examples.join(", ")),
                        if site.names > site.examples.len() {
                            format!(" (+{} more)", site.names - site.examples.len())
                        } else {
                            String::new()
                        }
                    )
                };
                let _ = writeln!(
                    o,
                    "    {:>6}  {}{examples}",
                    site.count,
                    short_stack(&site.frames, 4)
                );
            }
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "{}", health_line(r));
    if let Some(d) = dir {
        let _ = writeln!(o, "reports in {}", clean(&d.display().to_string()));
    }
    // The last guard: no control character but our own line breaks.
    crate::text::clean_lines(&o).into_owned()
}

/// The health line: what the kernel side saw and dropped.
pub fn health_line(r: &Report) -> String {
    let h = &r.health;
    let mut line = match r.mode {
        Mode::Exact => format!(
            "health: {} allocator calls, {} frees seen; dropped: {} allocations (map full), {} descriptors (map full)",
            thousands(h.alloc_calls),
            thousands(h.free_calls),
            h.alloc_map_full,
            h.fd_map_full,
        ),
        Mode::Watch => format!(
            "health: {} allocator calls seen in windows; dropped: {} allocations, {} descriptors (map full)",
            thousands(h.alloc_calls),
            h.alloc_map_full,
            h.fd_map_full,
        ),
    };
    if h.closed_dropped > 0 {
        line.push_str(&format!(
            "; {} processes that ended earlier are not listed (at most {} ended ones are kept, those with something growing first)",
            thousands(h.closed_dropped),
            h.closed_kept
        ));
    }
    if h.missed.exited_before_attach > 0 {
        line.push_str(&format!(
            "; {} Python processes found ended before they could be attached (not traced)",
            thousands(h.missed.exited_before_attach)
        ));
    }
    if h.missed.forks_lost > 0 {
        line.push_str(&format!(
            "; {} processes forked by traced ones were not recorded (the kernel's fork map was full): the scan of /proc finds those that live long enough",
            thousands(h.missed.forks_lost)
        ));
    }
    if h.py_stacks_lost > 0 {
        line.push_str(&format!(
            "; {} Python stacks lost (the kernel's Python stack map was full): those allocations and descriptors have native frames only",
            thousands(h.py_stacks_lost)
        ));
    }
    if h.stacks_lost > 0 {
        line.push_str(&format!(
            "; {} native stacks lost (the kernel's stack map was full, or two stacks collided in it): those allocations and descriptors keep their Python frames but have no native frames",
            thousands(h.stacks_lost)
        ));
    }
    line
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
    fn descriptors_grouped_by_site() {
        let st = |f: &str, line, kind: &str, name: Option<String>, count| crate::report::FdStack {
            frames: vec![
                Frame::python("main", "a.py", Some(9)),
                Frame::python(f, "a.py", Some(line)),
                Frame::Resource {
                    kind: kind.into(),
                    name,
                },
            ],
            count,
        };
        let file = |i| Some(format!("/tmp/a-{i}.log"));
        let fds = vec![
            st("log", 3, "file", file(1), 1),
            st("log", 3, "file", file(2), 1),
            st("log", 3, "file", file(3), 1),
            st("log", 3, "file", file(4), 1),
            st("udp", 5, "socket inet/udp", None, 2),
        ];
        let sites = fd_sites(&fds);
        assert_eq!(sites.len(), 2);
        assert_eq!(sites[0].count, 4);
        assert_eq!(sites[0].frames.last().unwrap().to_string(), "[file]");
        assert_eq!(sites[0].examples.len(), FD_EXAMPLES);
        assert_eq!(sites[0].names, 4);
        assert_eq!(sites[1].count, 2);
        assert_eq!(
            sites[1].frames.last().unwrap().to_string(),
            "[socket inet/udp]"
        );
        assert!(sites[1].examples.is_empty());
        // The same Python line with and without its native frames (lost stacks) is one site.
        let mut native = st("log", 3, "file", file(5), 1);
        native.frames.insert(2, Frame::native("__libc_open64"));
        let sites = fd_sites(&[native, st("log", 3, "file", file(6), 1)]);
        assert_eq!(sites.len(), 1);
        assert_eq!(sites[0].count, 2);
    }

    #[test]
    fn lost_stacks_explained_only_when_some_are() {
        let mut r = Report {
            mode: Mode::Exact,
            interval: std::time::Duration::from_secs(10),
            budget: None,
            elapsed: std::time::Duration::from_secs(5),
            min_age: std::time::Duration::ZERO,
            procs: vec![],
            health: Default::default(),
            places: Default::default(),
        };
        assert!(!health_line(&r).contains("lost"), "{}", health_line(&r));
        r.health.stacks_lost = 433;
        let line = health_line(&r);
        assert!(
            line.contains("433 native stacks lost (the kernel's stack map was full"),
            "{line}"
        );
        assert!(
            line.contains("keep their Python frames but have no native frames"),
            "{line}"
        );
    }

    #[test]
    fn suspects_read_at_the_application_line_via_the_library() {
        let via = |f: &str, line| crate::report::Via {
            frames: vec![
                Frame::python("getLogger", "logging/__init__.py", Some(2150)),
                Frame::python(f, "logging/__init__.py", Some(line)),
            ],
            now: 10,
        };
        let mut s = Suspect {
            resource: Resource::Memory,
            frames: vec![Frame::python("user", "app.py", Some(9))],
            now: 2048,
            count: 3,
            trend: crate::report::Trend {
                verdict: Verdict::Growing,
                per_min: 1024.0,
                gained: 2048.0,
            },
            oldest_age: None,
            app_frame: Some(Frame::python("user", "app.py", Some(9))),
            via: vec![via("getLogger", 1403), via("isEnabledFor", 1805)],
        };
        let line = suspect_line(&s);
        assert!(
            line.contains("+1.0 KiB/min")
                && line.ends_with(
                    "  user (app.py:9)  via getLogger (logging/__init__.py:1403) (+1 more)"
                ),
            "{line}"
        );
        s.via.truncate(1);
        assert!(suspect_line(&s).ends_with("via getLogger (logging/__init__.py:1403)"));
        // Descriptors: the application line, the kind, then the library line.
        s.resource = Resource::Descriptors;
        s.frames = vec![
            Frame::python("spool", "app.py", Some(51)),
            Frame::Resource {
                kind: "file".into(),
                name: None,
            },
        ];
        s.via = vec![crate::report::Via {
            frames: vec![Frame::python("mkstemp", "tempfile.py", Some(357))],
            now: 4,
        }];
        assert!(
            suspect_line(&s).ends_with("spool (app.py:51) [file]  via mkstemp (tempfile.py:357)"),
            "{}",
            suspect_line(&s)
        );
        s.via.clear();
        assert!(suspect_line(&s).ends_with("spool (app.py:51) [file]"));
    }

    #[test]
    fn stacks_leaf_first() {
        let f: Vec<Frame> = ["a", "b", "c"].iter().map(|s| Frame::native(s)).collect();
        assert_eq!(short_stack(&f, 2), "c <- b <- ...");
        assert_eq!(short_stack(&[], 2), "[no stack]");
    }
}
