//! Suspects: every stack and descriptor site seen at a checkpoint, placed at the application's
//! line (`place`), the stacks through one line judged on their sum, ranked (`verdict::order`),
//! with the library call paths below the line that hold the most (`via`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::{AllocStack, AppPaths, Resource, Suspect, Via, MAX_SUSPECTS, MAX_VIA};
use crate::frame::Frame;
use crate::place::innermost_app;
use crate::snapshot::{Checkpoint, TargetView};
use crate::verdict::verdict_key;
use crate::verdict::{self, judge_series, judge_survivors, Series, Trend, Verdict};

/// A stack's place: the key its series is judged under, its application frame, and the frames
/// below that frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub key: Vec<Frame>,
    pub app_frame: Option<Frame>,
    pub below: Vec<Frame>,
}

/// The file of a Python frame that a reader can open: generated code (`<string>`, the methods
/// namedtuple and dataclasses make, named like `__init__` on 3.13) and frozen modules are
/// never the placed frame; a file is a path or at least a name with an extension.
pub(super) fn source_file(f: &Frame) -> Option<&str> {
    match f {
        Frame::Python { file, .. }
            if !file.starts_with('<') && (file.contains('/') || file.contains('.')) =>
        {
            Some(file.as_str())
        }
        _ => None,
    }
}

/// Places a verdict key (Python call path; descriptors: followed by the kind of resource) at its
/// innermost application frame: the key is cut below that frame, so that every stack through
/// the same application line is judged together. A stack without an application frame keeps
/// its key.
pub fn place(key: &[Frame], resource: Resource, paths: &AppPaths) -> Placed {
    let (path, leaf) = match (resource, key.split_last()) {
        (Resource::Descriptors, Some((leaf @ Frame::Resource { .. }, path))) => (path, Some(leaf)),
        _ => (key, None),
    };
    let Some(i) = innermost_app(paths, path.iter().map(source_file)) else {
        return Placed {
            key: key.to_vec(),
            app_frame: None,
            below: Vec::new(),
        };
    };
    let mut placed = path[..=i].to_vec();
    placed.extend(leaf.cloned());
    Placed {
        key: placed,
        app_frame: Some(path[i].clone()),
        below: path[i + 1..].to_vec(),
    }
}

/// Watch mode on a build that inlines pymalloc: the windows see only the allocations that miss the
/// inlined fast path, which favour whatever code carves fresh blocks, not what keeps them.
pub(super) fn watch_biased(t: &TargetView) -> bool {
    t.windows > 0 && t.hooks.inlined_fast_path
}

/// The stacks (verdict keys) of one placed suspect.
struct Group<'a> {
    app_frame: Option<Frame>,
    /// Each key, and its frames below the application frame.
    members: Vec<(&'a Vec<Frame>, Vec<Frame>)>,
}

/// Groups verdict keys by their place.
fn group<'a>(
    keys: impl Iterator<Item = &'a Vec<Frame>>,
    resource: Resource,
    paths: &AppPaths,
) -> BTreeMap<Vec<Frame>, Group<'a>> {
    let mut groups: BTreeMap<Vec<Frame>, Group<'a>> = BTreeMap::new();
    for k in keys {
        let p = place(k, resource, paths);
        groups
            .entry(p.key)
            .or_insert_with(|| Group {
                app_frame: p.app_frame,
                members: Vec::new(),
            })
            .members
            .push((k, p.below));
    }
    groups
}

/// The library call paths below a group's application frame, largest first.
fn via(members: &[(&Vec<Frame>, Vec<Frame>)], now: impl Fn(&Vec<Frame>) -> u64) -> Vec<Via> {
    let mut v: Vec<Via> = members
        .iter()
        .filter(|(_, below)| !below.is_empty())
        .map(|(k, below)| Via {
            frames: below.clone(),
            now: now(k),
        })
        .filter(|v| v.now > 0)
        .collect();
    v.sort_by(|a, b| b.now.cmp(&a.now).then_with(|| a.frames.cmp(&b.frames)));
    v.truncate(MAX_VIA);
    v
}

/// Judges every stack and descriptor site seen at any checkpoint, placed at its application
/// frame (`place`): the stacks through one application line are judged on their sum.
///
/// `biased`: the memory samples are not a fair sample of the allocations (see `watch_biased`):
/// memory suspects are listed but not judged.
pub(super) fn suspects(
    t: &TargetView,
    allocs: &[AllocStack],
    now_ns: u64,
    sampled: bool,
    biased: bool,
    paths: &AppPaths,
) -> Vec<Suspect> {
    let h = t.history;
    // One value per checkpoint (the sum over a group's keys), 0 where they are absent.
    let series = |value: &dyn Fn(&Checkpoint) -> u64| -> Vec<(f64, f64)> {
        h.iter().map(|c| (c.at, value(c) as f64)).collect()
    };
    let mut out = Vec::new();
    // The oldest allocation of each memory site, and the oldest descriptor of each descriptor
    // site (computed once: thousands of stacks map to hundreds of sites).
    let mut oldest_alloc: HashMap<Vec<Frame>, Duration> = HashMap::new();
    for a in allocs {
        let e = oldest_alloc
            .entry(verdict_key(a.frames.clone()))
            .or_default();
        *e = (*e).max(a.oldest_age);
    }
    let mut oldest_fd: HashMap<Vec<Frame>, u64> = HashMap::new();
    if let Some(s) = t.last {
        for f in &s.fds {
            let e = oldest_fd.entry(s.fd_site(f)).or_insert(u64::MAX);
            *e = (*e).min(f.info.ts_ns);
        }
    }
    let last = h.last();
    let interval = interval_s(h);
    let alloc_keys: BTreeSet<&Vec<Frame>> = h
        .iter()
        .flat_map(|c| c.allocs.keys().map(|k| &**k))
        .collect();
    for (key, g) in group(alloc_keys.into_iter(), Resource::Memory, paths) {
        let sum = |c: &Checkpoint, f: fn(&(u64, u64)) -> u64| -> u64 {
            g.members
                .iter()
                .filter_map(|(k, _)| c.allocs.get(*k))
                .map(f)
                .sum()
        };
        let bytes = series(&|c| sum(c, |v| v.0));
        let mut trend = if biased {
            Trend {
                verdict: Verdict::Unknown,
                ..judge_series(Series::Bytes, &bytes)
            }
        } else if sampled {
            // Samples are a small share of the allocations: judge their number, not their bytes.
            let counts = series(&|c| sum(c, |v| v.1));
            judge_survivors(&counts, &bytes)
        } else {
            judge_series(Series::Bytes, &bytes)
        };
        let oldest_age = g
            .members
            .iter()
            .filter_map(|(k, _)| oldest_alloc.get(*k).copied())
            .max();
        let count = last.map(|c| sum(c, |v| v.1)).unwrap_or(0);
        // Exact mode sees every allocation's age: a population younger than a checkpoint
        // interval turned over between checkpoints, whatever its size did.
        if !sampled
            && trend.verdict == Verdict::Growing
            && verdict::turned_over(
                oldest_age.map_or(f64::MAX, |a| a.as_secs_f64()),
                count,
                interval,
            )
        {
            trend.verdict = Verdict::Stable;
        }
        let at_last = |k: &Vec<Frame>| {
            last.and_then(|c| c.allocs.get(k))
                .copied()
                .unwrap_or((0, 0))
        };
        out.push(Suspect {
            resource: Resource::Memory,
            now: last.map(|c| sum(c, |v| v.0)).unwrap_or(0),
            count,
            trend,
            oldest_age,
            via: via(&g.members, |k| at_last(k).0),
            app_frame: g.app_frame,
            frames: key,
        });
    }
    let fd_keys: BTreeSet<&Vec<Frame>> =
        h.iter().flat_map(|c| c.fds.keys().map(|k| &**k)).collect();
    for (key, g) in group(fd_keys.into_iter(), Resource::Descriptors, paths) {
        let sum =
            |c: &Checkpoint| -> u64 { g.members.iter().filter_map(|(k, _)| c.fds.get(*k)).sum() };
        let open = series(&sum);
        let now = last.map(sum).unwrap_or(0);
        let oldest = g
            .members
            .iter()
            .filter_map(|(k, _)| oldest_fd.get(*k).copied())
            .min();
        out.push(Suspect {
            resource: Resource::Descriptors,
            now,
            count: now,
            trend: judge_series(Series::Descriptors, &open),
            oldest_age: oldest.map(|ts| Duration::from_nanos(now_ns.saturating_sub(ts))),
            via: via(&g.members, |k| {
                last.and_then(|c| c.fds.get(k)).copied().unwrap_or(0)
            }),
            app_frame: g.app_frame,
            frames: key,
        });
    }
    // Bytes and descriptors are not comparable: memory before descriptors.
    out.sort_by(|a, b| {
        let key = |s: &Suspect| (s.resource == Resource::Descriptors) as u8;
        verdict::order_grouped((&a.trend, key(a), a.now), (&b.trend, key(b), b.now))
            .then_with(|| a.frames.cmp(&b.frames))
    });
    out.truncate(MAX_SUSPECTS);
    out
}

/// The mean time between checkpoints (seconds; 0 with fewer than two).
fn interval_s(h: &[Checkpoint]) -> f64 {
    match (h.first(), h.last()) {
        (Some(a), Some(b)) if h.len() >= 2 => (b.at - a.at) / (h.len() - 1) as f64,
        _ => 0.0,
    }
}

/// Bytes gained by each memory stack between the first and the last checkpoint.
pub(super) fn growth(t: &TargetView) -> Vec<(Vec<Frame>, u64)> {
    let (Some(first), Some(last)) = (t.history.first(), t.history.last()) else {
        return Vec::new();
    };
    let mut out: Vec<(Vec<Frame>, u64)> = last
        .allocs
        .iter()
        .filter_map(|(k, now)| {
            let before = first.allocs.get(k).map(|v| v.0).unwrap_or(0);
            (now.0 > before).then(|| (k.to_vec(), now.0 - before))
        })
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::snapshot::HookCoverage;

    pub(in crate::report) const APP: &str = "/srv/app/app.py";
    pub(in crate::report) const LOGGING: &str = "/usr/lib/python3.12/logging/__init__.py";
    const TEMPFILE: &str = "/usr/lib/python3.12/tempfile.py";
    const FLASK: &str = "/srv/venv/lib/python3.12/site-packages/flask/app.py";

    pub(in crate::report) fn py(f: &str, file: &str, line: i32) -> Frame {
        Frame::python(f, file, Some(line))
    }

    /// The logger leak's stacks: Flask, the app's `user`, then logging's lines.
    pub(in crate::report) fn logger_stack(leaf: Frame) -> Vec<Frame> {
        vec![
            py("dispatch_request", FLASK, 880),
            py("user", APP, 9),
            py("getLogger", LOGGING, 2150),
            leaf,
        ]
    }

    #[test]
    fn placed_at_the_innermost_application_frame() {
        let paths = AppPaths::default();
        let k = logger_stack(py("getLogger", LOGGING, 1403));
        let p = place(&k, Resource::Memory, &paths);
        assert_eq!(p.key, k[..2].to_vec());
        assert_eq!(p.app_frame, Some(py("user", APP, 9)));
        assert_eq!(p.below, k[2..].to_vec());
        // A leaf in the application: the key stays.
        let own = vec![py("dispatch_request", FLASK, 880), py("user", APP, 10)];
        let p = place(&own, Resource::Memory, &paths);
        assert_eq!(p.key, own);
        assert_eq!(p.app_frame, Some(py("user", APP, 10)));
        assert!(p.below.is_empty());
        // Generated code (a namedtuple's `__new__`) is not the application's line.
        let gen = vec![
            py("user", APP, 9),
            py("urlsplit", "/usr/lib/python3.12/urllib/parse.py", 506),
            py("<lambda>", "<string>", 1),
        ];
        let p = place(&gen, Resource::Memory, &paths);
        assert_eq!(p.key, gen[..1].to_vec());
        assert_eq!(p.below, gen[1..].to_vec());
        // No application frame: the key stays, unplaced.
        let lib = vec![py("run", FLASK, 1), py("dumps", LOGGING, 2)];
        let p = place(&lib, Resource::Memory, &paths);
        assert_eq!((p.key, p.app_frame), (lib, None));
        // Descriptors keep their kind of resource as the leaf.
        let kind = Frame::Resource {
            kind: "file".into(),
            name: None,
        };
        let fd = vec![
            py("spool", APP, 51),
            py("mkstemp", TEMPFILE, 357),
            py("_mkstemp_inner", TEMPFILE, 256),
            kind.clone(),
        ];
        let p = place(&fd, Resource::Descriptors, &paths);
        assert_eq!(p.key, vec![py("spool", APP, 51), kind]);
        assert_eq!(p.below, fd[1..3].to_vec());
        // --app-path: the Flask frame is the application's.
        let flask = AppPaths::new(&["/srv/venv/lib/python3.12/site-packages/flask".into()]);
        let p = place(&k, Resource::Memory, &flask);
        assert_eq!(p.key, k[..1].to_vec());
        assert_eq!(p.below, k[1..].to_vec());
    }

    fn target<'a>(history: &'a [Checkpoint]) -> TargetView<'a> {
        TargetView {
            seq: 0,
            pid: 1,
            comm: "python3",
            container: None,
            nspid: None,
            interpreter: String::new(),
            hooks: HookCoverage::default(),
            exited_after: None,
            execd: None,
            last: None,
            history,
            alloc_calls_base: 0,
            cpu_seconds: 0.0,
            windows: 0,
            survivors: 0,
            armed: Duration::ZERO,
            traced_for: Duration::ZERO,
            census: None,
            resident: &[],
            warning: None,
        }
    }

    #[test]
    fn stacks_through_one_application_line_are_judged_together() {
        // Two logging lines below `user`, gaining 20 and 15 kB per checkpoint: each under the
        // noise floor alone (64 KiB over the recent window of 4 checkpoints), growing together. A line of the
        // application's own that stays flat stays apart and stable.
        let a = logger_stack(py("getLogger", LOGGING, 1403));
        let b = logger_stack(py("isEnabledFor", LOGGING, 1805));
        let flat = vec![py("dispatch_request", FLASK, 880), py("index", APP, 20)];
        let history: Vec<Checkpoint> = (0..6u64)
            .map(|i| Checkpoint {
                at: i as f64 * 10.0,
                allocs: HashMap::from([
                    (a.clone().into(), (20_000 * i, 10 * i)),
                    (b.clone().into(), (15_000 * i + 1, 5 * i + 1)),
                    (flat.clone().into(), (1 << 20, 100)),
                ]),
                fds: HashMap::new(),
            })
            .collect();
        let t = target(&history);
        let s = suspects(&t, &[], 0, false, false, &AppPaths::default());
        assert_eq!(s.len(), 2, "{s:#?}");
        let user = &s[0];
        assert_eq!(user.frames, a[..2].to_vec());
        assert_eq!(user.trend.verdict, Verdict::Growing);
        assert_eq!(user.now, 100_000 + 75_001);
        assert_eq!(user.count, 50 + 26);
        assert_eq!(user.app_frame, Some(py("user", APP, 9)));
        // Largest first: which allocation.
        assert_eq!(user.via.len(), 2);
        assert_eq!(user.via[0].frames, a[2..].to_vec());
        assert_eq!(user.via[0].now, 100_000);
        assert_eq!(user.via[1].frames, b[2..].to_vec());
        assert_eq!(s[1].frames, flat);
        assert_eq!(s[1].trend.verdict, Verdict::Stable);
        assert!(s[1].via.is_empty());
        // Judged apart, each logging line is under the floor: the grouping is what finds it.
        let lib = AppPaths::new(&["/nowhere".into()]);
        let s = suspects(&t, &[], 0, false, false, &lib);
        assert_eq!(s.len(), 3);
        assert!(s
            .iter()
            .all(|s| s.trend.verdict != Verdict::Growing && s.via.is_empty()));
    }

    #[test]
    fn descriptors_placed_at_the_application_line() {
        let kind = Frame::Resource {
            kind: "file".into(),
            name: None,
        };
        let site = |inner: i32| {
            vec![
                py("spool", APP, 51),
                py("mkstemp", TEMPFILE, 357),
                py("_mkstemp_inner", TEMPFILE, inner),
                kind.clone(),
            ]
        };
        let history: Vec<Checkpoint> = (0..6u64)
            .map(|i| Checkpoint {
                at: i as f64 * 10.0,
                allocs: HashMap::new(),
                fds: HashMap::from([(site(256).into(), i), (site(260).into(), 2 * i)]),
            })
            .collect();
        let s = suspects(
            &target(&history),
            &[],
            0,
            false,
            false,
            &AppPaths::default(),
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].resource, Resource::Descriptors);
        assert_eq!(s[0].frames, vec![py("spool", APP, 51), kind.clone()]);
        assert_eq!(s[0].now, 15);
        assert_eq!(s[0].trend.verdict, Verdict::Growing);
        assert_eq!(s[0].via[0].frames, site(260)[1..3].to_vec());
        assert_eq!(s[0].via[0].now, 10);
    }
}
