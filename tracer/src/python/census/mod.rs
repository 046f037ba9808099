//! Heap census from outside the process, with no probe at all: walk the gc's generation lists
//! in the target's memory (read through python/mem.rs, never written), count the gc-tracked
//! objects by type, follow the length of every big list, dict and set from one pass to the next,
//! and name the ones that keep growing by how they are reachable from a module
//! (`__main__.REQUEST_LOG`, `app.Registry.items`, `__main__.CACHES['users']`). It costs the
//! target nothing (no trap; the tracer reads), works the same on builds that inline pymalloc, and
//! says what a leak is made of.
//!
//! It does not see objects the gc does not track (str, bytes, int, dicts of atomic values...):
//! those are seen through the containers that hold them.
//!
//! The target keeps running while it is read, so a pass is a fuzzy snapshot: every step checks
//! the list's back link, a torn list (an object freed under the walk) ends that generation's walk
//! and marks the pass partial. Containers are matched across passes by address and type.
//!
//! The census is split by concern: `walk` (the gc's lists), `objects` (decoding dicts, lists,
//! sets, attributes, types and sizes), `naming` (module globals, class attributes, frame locals,
//! one level below them), `backref` (the reference path of a growing container no short path
//! names, found by a back-reference search within a time budget per pass); this file runs the
//! passes and follows the containers. Their verdicts
//! and orderings come from `crate::verdict`, like every other series'.

mod backref;
mod naming;
mod objects;
mod tasks;
mod walk;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::frames::{FrameLocals, Runtime};
use super::layouts::Layout;
use super::mem::{self, Memory, Pages};
use crate::frame::Frame;
use crate::place::is_stdlib_file;
use crate::procfs;
use crate::verdict::{self, judge_counts, Series, Trend, Verdict};
use backref::{Roots, Searches};
use naming::Root;
use objects::{Kind, Reader, TypeCache};

/// Lists, dicts and sets are followed from this length on.
const MIN_LEN: u64 = 64;
const MAX_FOLLOWED: usize = 50_000;
/// Containers named and described (growing first, then the largest), and reported.
const DESCRIBED: usize = 16;
const REPORTED: usize = 12;
/// Generators and coroutines whose frames are read, per pass.
const MAX_GENERATORS: usize = 10_000;
/// Uses of a container kept.
const MAX_USES: usize = 8;
/// Distinct sampled stacks kept per process.
const MAX_STACK_SAMPLES: usize = 20_000;

pub use crate::snapshot::census::{
    CensusReport, ContainerReport, Holds, TaskReport, TasksReport, TypeReport,
};

/// A list, dict or set followed across passes.
struct Followed {
    type_name: String,
    kind: Kind,
    series: Vec<(f64, u64)>,
    /// How it is reachable (None: not looked for yet; Some(None): not found from a module).
    name: Option<Option<String>>,
    /// What holds it: a module global, or a local of a running frame.
    root: Option<Root>,
    /// The attribute that holds it, when a reference path names it: its name's key object.
    attr: Option<u64>,
    /// The key it is held at in a plain dict after that attribute (see `backref::Found`).
    key: Option<u64>,
    /// Uses in functions that add to no container (they read this one: not feeders).
    readers: Vec<Frame>,
    /// The code that uses it: the lines that load its global, or the functions that name the
    /// attribute holding it (found once).
    uses: Option<Vec<Frame>>,
    holds: Option<Holds>,
}

/// The census of one process, pass after pass.
pub struct Census {
    pid: u32,
    /// The process's memory (or recorded pages of it).
    mem: Arc<dyn Memory + Send + Sync>,
    layout: &'static Layout,
    runtime: u64,
    /// Runtime address of `PyType_Type` (gc list heads are checked with it).
    type_type: u64,
    /// The gc list heads, once found.
    known_heads: Option<Vec<u64>>,
    pub passes: u64,
    pub partial: u64,
    pub last_ms: f64,
    pub error: Option<String>,
    objects: u64,
    types: HashMap<String, Vec<(f64, u64)>>,
    followed: HashMap<(u64, u64), Followed>,
    /// Python stacks sampled from outside (root first), with how often each was seen.
    samples: HashMap<Vec<Frame>, u64>,
    /// Resident memory (bytes) at each pass.
    rss: Vec<(f64, u64)>,
    /// A growing container hangs from a module global: stack samples can say which call
    /// paths reach the code that uses it.
    pub wants_stacks: bool,
    /// The kernel's on-CPU sampler records this process's stacks (set by the collector).
    pub sampled: bool,
    /// Back-reference searches for growing containers no short path names, and for one
    /// object of each growing type.
    searches: Searches,
    /// Growing types: where one of their objects is held.
    holders: HashMap<String, Holder>,
    /// The names of the classes seen (heap types): a growing class is searched for, not a
    /// growing tuple or cell (one of many says nothing of the others).
    classes: HashSet<String>,
    /// Pending asyncio tasks by coroutine (function, file), and in all, pass after pass.
    tasks: HashMap<(String, String), tasks::TaskSeries>,
    tasks_total: Vec<(f64, u64)>,
    /// Where a task object points to its coroutine (found once).
    task_coro_offset: Option<u64>,
}

/// The search for where a growing type's objects are held.
#[derive(Debug, Clone, PartialEq)]
enum Holder {
    /// An object of the type is to be picked at the next pass (which keeps every object).
    Wanted,
    /// This object's holders are searched for.
    Searching(u64),
    /// Its reference path.
    Named(String),
    /// Not found (the object went, or no path within the search's limits).
    NotFound,
}

/// Growing types searched for at once.
const TYPE_SEARCHES: usize = 3;

/// One walk of the gc lists.
#[derive(Default)]
struct Pass {
    objects: u64,
    complete: bool,
    by_type: HashMap<u64, u64>,
    /// (object, type, length) of big or followed containers.
    lens: Vec<(u64, u64, u64)>,
    modules: Vec<u64>,
    functions: Vec<u64>,
    /// Generators and coroutines (their suspended frames' locals are roots).
    generators: Vec<u64>,
    /// asyncio tasks.
    tasks: Vec<u64>,
    /// Every object walked (object, type), when a back-reference search needs them.
    all: Vec<(u64, u64)>,
}

impl Census {
    /// `runtime`, `type_type`: runtime addresses of `_PyRuntime` and `PyType_Type`.
    pub fn new(pid: u32, layout: &'static Layout, runtime: u64, type_type: u64) -> Census {
        Census::with_memory(pid, Arc::new(mem::Process(pid)), layout, runtime, type_type)
    }

    /// The same over any `Memory` (recorded pages, in tests).
    pub fn with_memory(
        pid: u32,
        mem: Arc<dyn Memory + Send + Sync>,
        layout: &'static Layout,
        runtime: u64,
        type_type: u64,
    ) -> Census {
        Census {
            pid,
            mem,
            layout,
            runtime,
            type_type,
            known_heads: None,
            passes: 0,
            partial: 0,
            last_ms: 0.0,
            error: None,
            objects: 0,
            types: HashMap::new(),
            followed: HashMap::new(),
            samples: HashMap::new(),
            rss: Vec::new(),
            wants_stacks: false,
            sampled: false,
            searches: Searches::default(),
            holders: HashMap::new(),
            classes: HashSet::new(),
            tasks: HashMap::new(),
            tasks_total: Vec::new(),
            task_coro_offset: None,
        }
    }

    /// Adds the Python stacks the threads were running at one moment (read from outside).
    pub fn add_stacks(&mut self, stacks: Vec<Vec<Frame>>) {
        for s in stacks {
            self.add_stack(s, 1);
        }
    }

    /// Adds a Python stack (root first) seen `n` times (the kernel's on-CPU samples).
    pub fn add_stack(&mut self, stack: Vec<Frame>, n: u64) {
        if self.samples.len() < MAX_STACK_SAMPLES || self.samples.contains_key(&stack) {
            *self.samples.entry(stack).or_default() += n;
        }
    }

    /// The sampled call paths to the lines in `uses` (each cut at the using function, whose
    /// frame shows the line of the use), most seen first.
    fn paths_to(&self, uses: &[Frame]) -> Vec<(Vec<Frame>, u64)> {
        let mut paths: HashMap<Vec<Frame>, u64> = HashMap::new();
        for (stack, n) in &self.samples {
            // The innermost frame in a function that uses the container.
            let hit = stack
                .iter()
                .enumerate()
                .rev()
                .find_map(|(i, fr)| uses.iter().find(|u| same_function(u, fr)).map(|u| (i, u)));
            if let Some((i, use_label)) = hit {
                let mut p = stack[..i].to_vec();
                // A use found by function (no line) shows the line the sample ran.
                p.push(match use_label {
                    Frame::Python { line: None, .. } => stack[i].clone(),
                    _ => use_label.clone(),
                });
                *paths.entry(p).or_default() += n;
            }
        }
        let mut v: Vec<(Vec<Frame>, u64)> = paths.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(3);
        v
    }

    /// One census pass at `at` (seconds since tracing began). `rt` reads frames and code
    /// objects (locals as roots, the lines that use a growing container).
    pub fn pass(&mut self, at: f64, mut rt: Option<&mut Runtime>) {
        let t0 = Instant::now();
        let src = self.mem.clone();
        let mem = Pages::new(&*src);
        let mut types = TypeCache::new(self.layout, self.type_type);
        let mut pass = match self.walk(&mem, &mut types) {
            Ok(p) => p,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        self.error = None;
        self.passes += 1;
        if let Some(rss) = procfs::rss_bytes(self.pid) {
            self.rss.push((at, rss));
        }
        if !pass.complete {
            self.partial += 1;
        }
        self.objects = pass.objects;
        // Object counts by type name.
        let mut counts: HashMap<String, u64> = HashMap::new();
        for (ty, n) in &pass.by_type {
            let name = match types.get(&mem, *ty) {
                Some(t) => {
                    if t.is_class() && self.classes.len() < 10_000 {
                        self.classes.insert(t.name.clone());
                    }
                    t.name
                }
                None => "?".into(),
            };
            *counts.entry(name).or_default() += n;
        }
        // A partial pass undercounts: type counts are taken from complete passes only.
        if pass.complete {
            for (name, series) in self.types.iter_mut() {
                series.push((at, counts.remove(name).unwrap_or(0)));
            }
            for (name, n) in counts {
                if self.types.len() < 10_000 {
                    self.types.insert(name, vec![(at, n)]);
                }
            }
        }
        // Big containers held by module globals or by the locals of running frames, tracked by
        // the gc or not (a dict of strings is not: the classic cache), named on the way.
        let frames = rt
            .as_mut()
            .map(|rt| {
                let mut f = rt.frame_locals();
                f.extend(rt.suspended_locals(&pass.generators));
                f
            })
            .unwrap_or_default();
        // Pending asyncio tasks (counted from complete passes: a partial one undercounts).
        if let (true, Some(rt)) = (pass.complete, rt.as_mut()) {
            let tasks = std::mem::take(&mut pass.tasks);
            let mut r = Reader {
                mem: &mem,
                types: &mut types,
                layout: self.layout,
            };
            self.count_tasks(&mut r, &tasks, rt, at);
        }
        let mut lens = std::mem::take(&mut pass.lens);
        let mut globals_named = HashMap::new();
        {
            let mut r = Reader {
                mem: &mem,
                types: &mut types,
                layout: self.layout,
            };
            let known: HashSet<u64> = lens.iter().map(|l| l.0).collect();
            let mut held = r.module_containers(&pass.modules);
            held.extend(r.local_containers(&frames));
            for (named, obj, ty, len) in held {
                if len >= MIN_LEN || self.followed.contains_key(&(obj, ty)) {
                    if !known.contains(&obj) {
                        lens.push((obj, ty, len));
                    }
                    globals_named.entry((obj, ty)).or_insert(named);
                }
            }
        }
        // Container lengths; what a complete pass did not see is gone.
        let mut seen = HashSet::new();
        for (obj, ty, len) in lens {
            seen.insert((obj, ty));
            if let Some(f) = self.followed.get_mut(&(obj, ty)) {
                f.series.push((at, len));
            } else if self.followed.len() < MAX_FOLLOWED {
                let Some(info) = types.get(&mem, ty) else {
                    continue;
                };
                self.followed.insert(
                    (obj, ty),
                    Followed {
                        type_name: info.name.clone(),
                        kind: info.kind(),
                        series: vec![(at, len)],
                        name: None,
                        root: None,
                        attr: None,
                        key: None,
                        readers: Vec::new(),
                        uses: None,
                        holds: None,
                    },
                );
            }
        }
        if pass.complete {
            self.followed.retain(|k, _| seen.contains(k));
        }
        for (k, (label, root)) in globals_named {
            if let Some(f) = self.followed.get_mut(&k) {
                if !matches!(f.name, Some(Some(_))) {
                    f.name = Some(Some(label));
                    f.root = Some(root);
                }
            }
        }
        self.describe(&mem, &mut types, &pass.modules);
        self.search(&mem, &mut types, &pass, &frames);
        // Sampling runs while such a container is suspect (growing, or rising pass after pass:
        // a service whose containers keep their size is not sampled).
        self.wants_stacks = self
            .followed
            .values()
            .any(|f| matches!(f.root, Some(Root::Global(..))) && suspect(&f.series));
        if let Some(rt) = rt {
            self.find_uses(&mem, rt, &pass.functions);
        }
        self.last_ms = t0.elapsed().as_secs_f64() * 1e3;
    }
}

impl Census {
    /// The growing containers, and the largest others, get a name and a description of what they
    /// hold (once: a name is kept for the container's life).
    fn describe(&mut self, mem: &Pages, types: &mut TypeCache, modules: &[u64]) {
        let mut order: Vec<((u64, u64), Trend, u64)> = self
            .followed
            .iter()
            .map(|(k, f)| {
                (
                    *k,
                    judge(&f.series),
                    f.series.last().map(|p| p.1).unwrap_or(0),
                )
            })
            .collect();
        order.sort_by(|a, b| verdict::order(&a.1, a.2, &b.1, b.2));
        let wanted: Vec<(u64, u64)> = order.iter().take(DESCRIBED).map(|o| o.0).collect();
        let unnamed: HashSet<u64> = wanted
            .iter()
            .filter(|k| self.followed[k].name.is_none())
            .map(|k| k.0)
            .collect();
        let names = if unnamed.is_empty() {
            HashMap::new()
        } else {
            let mut r = Reader {
                mem,
                types,
                layout: self.layout,
            };
            r.name_all(modules, &unnamed)
        };
        for k in wanted {
            let grow = order
                .iter()
                .find(|o| o.0 == k)
                .is_some_and(|o| o.1.verdict == Verdict::Growing);
            let f = self.followed.get_mut(&k).unwrap();
            if f.name.is_none() {
                let n = names.get(&k.0).cloned();
                f.root = n.as_ref().map(|n| n.1.clone());
                f.name = Some(n.map(|n| n.0));
            }
            if grow || f.holds.is_none() {
                let mut r = Reader {
                    mem,
                    types,
                    layout: self.layout,
                };
                let len = f.series.last().map(|p| p.1).unwrap_or(0);
                if let Some(h) = r.holds(k.0, f.kind, len) {
                    f.holds = Some(h);
                }
            }
        }
    }

    /// Reference paths for the growing containers no short path names: searches start for them
    /// (seen by the next pass's walk) and go on within `backref::BUDGET` per pass; a path
    /// found, and read again, names its container.
    fn search(&mut self, mem: &Pages, types: &mut TypeCache, pass: &Pass, frames: &[FrameLocals]) {
        let followed = &self.followed;
        let holders = &self.holders;
        self.searches.retain(|a| {
            followed
                .iter()
                .any(|(k, f)| k.0 == a && matches!(f.name, Some(None)))
                || holders.values().any(|h| *h == Holder::Searching(a))
        });
        // A type's search that ended without a name (given up, or its object gone).
        for h in self.holders.values_mut() {
            if let Holder::Searching(a) = h {
                if !self.searches.has(*a) {
                    *h = Holder::NotFound;
                }
            }
        }
        let mut r = Reader {
            mem,
            types,
            layout: self.layout,
        };
        if !self.searches.is_empty() && !pass.all.is_empty() {
            let roots = Roots::new(&mut r, &pass.modules, frames);
            for found in self
                .searches
                .run(&mut r, &pass.all, &roots, backref::BUDGET)
            {
                for h in self.holders.values_mut() {
                    if *h == Holder::Searching(found.target) {
                        *h = Holder::Named(found.name.clone());
                    }
                }
                for (k, f) in self.followed.iter_mut() {
                    if k.0 == found.target {
                        f.name = Some(Some(found.name.clone()));
                        f.root = Some(found.root.clone());
                        f.attr = found.attr;
                        f.key = found.key;
                        f.uses = None;
                    }
                }
            }
        }
        // Unnamed containers that grow (or rose at each of the last passes) are searched for.
        for (k, f) in &self.followed {
            if !matches!(f.name, Some(None)) || self.searches.has(k.0) {
                continue;
            }
            if suspect(&f.series) {
                self.searches.want(k.0);
            }
        }
        self.search_types(types, mem, pass);
    }

    /// Does the next pass pick an object of a growing type (and so keep every object)?
    fn types_wanted(&self) -> bool {
        self.holders.values().any(|h| *h == Holder::Wanted)
    }

    /// Growing classes get a search for where one of their newest objects is held: wanted at
    /// one pass, the object picked from the next pass's objects (the last one walked of that
    /// type), searched for after the containers' searches.
    fn search_types(&mut self, types: &mut TypeCache, mem: &Pages, pass: &Pass) {
        let searching = self
            .holders
            .values()
            .filter(|h| matches!(h, Holder::Wanted | Holder::Searching(_)))
            .count();
        let mut growing: Vec<&String> = self
            .types
            .iter()
            .filter(|(name, s)| {
                !self.holders.contains_key(*name)
                    && self.classes.contains(*name)
                    && judge_counts(Series::Objects, s).verdict == Verdict::Growing
            })
            .map(|(name, _)| name)
            .collect();
        growing.sort();
        growing.truncate(TYPE_SEARCHES.saturating_sub(searching));
        let wanted: Vec<String> = growing.into_iter().cloned().collect();
        // Objects picked for the types wanted at the last pass: their type objects (a few),
        // then the last object walked of each.
        if !pass.all.is_empty() {
            let wanted_types: HashMap<u64, String> = pass
                .by_type
                .keys()
                .filter_map(|&ty| Some((ty, types.get(mem, ty)?.name)))
                .filter(|(_, name)| self.holders.get(name) == Some(&Holder::Wanted))
                .collect();
            let mut last: HashMap<u64, u64> = HashMap::new();
            for &(obj, ty) in &pass.all {
                if wanted_types.contains_key(&ty) {
                    last.insert(ty, obj);
                }
            }
            let picked: HashMap<&String, u64> = last
                .iter()
                .map(|(ty, &obj)| (&wanted_types[ty], obj))
                .collect();
            for (name, h) in self.holders.iter_mut() {
                if *h != Holder::Wanted {
                    continue;
                }
                match picked.get(name) {
                    Some(&obj) => {
                        self.searches.want(obj);
                        if self.searches.has(obj) {
                            *h = Holder::Searching(obj);
                        }
                    }
                    None => *h = Holder::NotFound,
                }
            }
        }
        for name in wanted {
            self.holders.insert(name, Holder::Wanted);
        }
    }

    /// Time the last pass's back-reference search took (ms) and the objects it scanned.
    pub fn search_cost(&self) -> (f64, u64) {
        (self.searches.last_ms, self.searches.last_scanned)
    }

    /// For each container hanging from a module global: the lines of the functions of that
    /// module that load the global, or, when an attribute below the global holds it
    /// (`logging.Logger.manager.loggerDict`), the functions that name that attribute (those of
    /// the global's module first: `Manager.getLogger`). For a local: the line its frame runs.
    /// Found once.
    fn find_uses(&mut self, mem: &Pages, rt: &mut Runtime, functions: &[u64]) {
        let l = self.layout;
        for f in self.followed.values_mut() {
            if f.uses.is_some() {
                continue;
            }
            let (dict, global) = match &f.root {
                Some(Root::Global(d, g)) => (*d, g),
                Some(Root::Local(frame, _)) => {
                    f.uses = Some(vec![frame.clone()]);
                    continue;
                }
                None => continue,
            };
            let mut uses = Vec::new();
            let add = |uses: &mut Vec<Frame>, u: Frame| {
                if !uses.contains(&u) && uses.len() < MAX_USES {
                    uses.push(u);
                }
            };
            let code = |func: u64| mem.u64(func + l.func_code);
            let in_module = |func: u64| mem.u64(func + l.func_globals) == Some(dict);
            match f.attr {
                Some(attr) => {
                    // The standard library's functions are uses only of a container its own
                    // modules hold (a stdlib function that names some `_state` does not use
                    // the app's).
                    let stdlib_root =
                        functions
                            .iter()
                            .filter(|&&func| in_module(func))
                            .any(|&func| {
                                code(func)
                                    .and_then(|c| rt.code_file(c))
                                    .is_some_and(|file| is_stdlib_file(&file))
                            });
                    // The name the code uses: the key of the dict the path ends in (served
                    // as an attribute by a proxy: Starlette's `State`), then the attribute;
                    // the global's module first, then any.
                    'names: for name in f.key.into_iter().chain([attr]) {
                        for own in [true, false] {
                            for &func in functions.iter().filter(|&&func| in_module(func) == own) {
                                let Some(c) = code(func) else { continue };
                                for u in rt.attr_uses(c, name) {
                                    let stdlib = matches!(&u, Frame::Python { file, .. } if is_stdlib_file(file));
                                    if stdlib_root || !stdlib {
                                        if rt.adds_to_containers(c) == Some(false) {
                                            f.readers.push(u.clone());
                                        }
                                        add(&mut uses, u);
                                    }
                                }
                            }
                            if !uses.is_empty() {
                                break 'names;
                            }
                        }
                    }
                }
                None => {
                    for &func in functions.iter().filter(|&&func| in_module(func)) {
                        let Some(c) = code(func) else { continue };
                        for u in rt.global_uses(c, global) {
                            if rt.adds_to_containers(c) == Some(false) {
                                f.readers.push(u.clone());
                            }
                            add(&mut uses, u);
                        }
                    }
                }
            }
            f.uses = Some(uses);
        }
    }

    pub fn report(&self) -> CensusReport {
        let mut containers: Vec<(ContainerReport, u64)> = self
            .followed
            .iter()
            .filter(|(_, f)| f.name.is_some())
            .map(|((addr, _), f)| {
                let name = f.name.clone().flatten();
                (
                    ContainerReport {
                        named: name.is_some(),
                        name: name.unwrap_or_else(|| format!("{} at {addr:#x}", f.type_name)),
                        type_name: f.type_name.clone(),
                        len: f.series.last().map(|p| p.1).unwrap_or(0),
                        trend: judge(&f.series),
                        holds: f.holds.clone(),
                        uses: f.uses.clone().unwrap_or_default(),
                        readers: f.readers.clone(),
                        stacks: match &f.root {
                            Some(Root::Local(_, stack)) => vec![(stack.clone(), 0)],
                            Some(Root::Global(..)) => {
                                self.paths_to(f.uses.as_deref().unwrap_or(&[]))
                            }
                            None => Vec::new(),
                        },
                        root: match f.root {
                            Some(Root::Global(..)) => "global",
                            Some(Root::Local(..)) => "local",
                            None => "unreached",
                        },
                    },
                    *addr,
                )
            })
            .collect();
        // The ones a reader can place (named) before the others.
        containers.sort_by(|a, b| {
            let key = |c: &ContainerReport| (!c.named) as u8;
            verdict::order_grouped(
                (&a.0.trend, key(&a.0), a.0.len),
                (&b.0.trend, key(&b.0), b.0.len),
            )
            .then(a.1.cmp(&b.1))
        });
        let mut types: Vec<TypeReport> = self
            .types
            .iter()
            .map(|(name, s)| TypeReport {
                name: name.clone(),
                count: s.last().map(|p| p.1).unwrap_or(0),
                trend: judge_counts(Series::of_type(name), s),
                held_at: match self.holders.get(name) {
                    Some(Holder::Named(path)) => Some(path.clone()),
                    _ => None,
                },
            })
            .filter(|t| t.count > 0)
            .collect();
        types.sort_by(|a, b| {
            verdict::order(&a.trend, a.count, &b.trend, b.count).then(a.name.cmp(&b.name))
        });
        types.truncate(10);
        CensusReport {
            passes: self.passes,
            partial: self.partial,
            last_ms: self.last_ms,
            objects: self.objects,
            stack_samples: self.samples.values().sum(),
            rss: self.rss.last().map(|p| p.1).unwrap_or(0),
            rss_trend: judge_counts(Series::Resident, &self.rss),
            containers: containers.into_iter().map(|c| c.0).take(REPORTED).collect(),
            types,
            tasks: self.tasks_report(),
            error: self.error.clone(),
        }
    }
}

/// The decoders and the names, for tests on recorded pages.
#[cfg(test)]
impl Census {
    fn with_reader<R>(&self, f: impl FnOnce(&mut Reader) -> R) -> R {
        let mem = Pages::new(&*self.mem);
        let mut types = TypeCache::new(self.layout, self.type_type);
        f(&mut Reader {
            mem: &mem,
            types: &mut types,
            layout: self.layout,
        })
    }

    /// A dict's (key, value) pairs.
    pub fn decode_dict(&self, d: u64) -> Vec<(u64, u64)> {
        self.with_reader(|r| r.dict_items(d))
    }

    /// A list's items.
    pub fn decode_list(&self, l: u64) -> Option<Vec<u64>> {
        self.with_reader(|r| r.list_items(l, 1 << 20))
    }

    /// An object's type name.
    pub fn type_name(&self, obj: u64) -> Option<String> {
        self.with_reader(|r| r.type_of(obj).map(|t| t.name))
    }

    /// The reference paths of `targets`, searched at once without a time limit over a walk
    /// of the gc lists: (container, name).
    pub fn reference_paths(&mut self, targets: &[u64], rt: &mut Runtime) -> Vec<(u64, String)> {
        for &t in targets {
            self.searches.want(t);
        }
        let src = self.mem.clone();
        let mem = Pages::new(&*src);
        let mut types = TypeCache::new(self.layout, self.type_type);
        let Ok(pass) = self.walk(&mem, &mut types) else {
            return Vec::new();
        };
        let frames = rt.frame_locals();
        let mut r = Reader {
            mem: &mem,
            types: &mut types,
            layout: self.layout,
        };
        let roots = Roots::new(&mut r, &pass.modules, &frames);
        let budget = std::time::Duration::from_secs(120);
        let mut v: Vec<(u64, String)> = self
            .searches
            .run(&mut r, &pass.all, &roots, budget)
            .into_iter()
            .map(|f| (f.target, f.name))
            .collect();
        v.sort();
        v
    }

    /// Every followed container that has a name: (name, length now).
    pub fn names(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .followed
            .values()
            .filter_map(|f| {
                let len = f.series.last()?.1;
                Some((f.name.clone()??, len))
            })
            .collect();
        v.sort();
        v
    }
}

/// Are both frames in one Python function (same name, same file; the lines may differ)?
fn same_function(a: &Frame, b: &Frame) -> bool {
    match (a, b) {
        (
            Frame::Python {
                function: fa,
                file: ra,
                ..
            },
            Frame::Python {
                function: fb,
                file: rb,
                ..
            },
        ) => fa == fb && ra == rb,
        _ => false,
    }
}

/// Judged growing, or rose at each of the last three passes (not a verdict yet: reason enough
/// to look for its name and sample the stacks that use it).
fn suspect(s: &[(f64, u64)]) -> bool {
    let rising = s.len() >= 3 && s[s.len() - 3..].windows(2).all(|w| w[1].1 > w[0].1);
    rising || judge(s).verdict == Verdict::Growing
}

/// A container's items or a type's objects, judged.
fn judge(series: &[(f64, u64)]) -> Trend {
    judge_counts(Series::Items, series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::layouts::{layout_for, DictLayout, GcHeads};

    /// The census of this very process's own memory is not possible (no CPython here), but the
    /// ranking and the verdicts on count series are pure logic.
    #[test]
    fn growing_before_large() {
        let up: Vec<(f64, u64)> = (0..8).map(|i| (i as f64 * 10.0, 100 + 500 * i)).collect();
        let flat: Vec<(f64, u64)> = (0..8).map(|i| (i as f64 * 10.0, 8000)).collect();
        let g = judge(&up);
        let s = judge(&flat);
        assert_eq!(g.verdict, Verdict::Growing);
        assert_eq!(s.verdict, Verdict::Stable);
        assert_eq!(verdict::order(&g, 3600, &s, 8000), std::cmp::Ordering::Less);
        // A cache that fills and then stays flat is not growing at the end.
        let fill: Vec<(f64, u64)> = (0..10)
            .map(|i| (i as f64 * 10.0, (1000 * i).min(3000)))
            .collect();
        assert_ne!(judge(&fill).verdict, Verdict::Growing);
    }

    #[test]
    fn call_paths_to_a_use() {
        let mut c = Census::new(1, layout_for(3, 11).unwrap(), 0, 0);
        let fr = |s: &str| {
            let (f, rest) = s.split_once(" (").unwrap();
            let (file, line) = rest.trim_end_matches(')').rsplit_once(':').unwrap();
            Frame::python(f, file, line.parse().ok())
        };
        let st = |v: &[&str]| v.iter().map(|s| fr(s)).collect::<Vec<_>>();
        c.add_stacks(vec![
            st(&[
                "<module> (a.py:90)",
                "main (a.py:70)",
                "handle (a.py:28)",
                "dumps (json.py:3)",
            ]),
            st(&["<module> (a.py:90)", "main (a.py:70)", "handle (a.py:27)"]),
            st(&["<module> (a.py:90)", "main (a.py:75)", "other (a.py:40)"]),
        ]);
        c.add_stacks(vec![st(&[
            "<module> (a.py:90)",
            "main (a.py:70)",
            "handle (a.py:27)",
        ])]);
        let p = c.paths_to(&[fr("handle (a.py:28)")]);
        assert_eq!(
            p,
            vec![(
                st(&["<module> (a.py:90)", "main (a.py:70)", "handle (a.py:28)"]),
                3
            )]
        );
        assert!(same_function(&fr("f (x/y.py:3)"), &fr("f (x/y.py:9)")));
    }

    #[test]
    fn layouts_have_gc_offsets() {
        for minor in 8..=15 {
            let l = layout_for(3, minor).unwrap();
            match l.gc {
                GcHeads::Fixed { offset, in_runtime } => {
                    assert!(offset > 0 && minor <= 13);
                    assert_eq!(in_runtime, minor == 8);
                }
                GcHeads::Search { size, .. } => assert!(size > 0 && minor >= 14),
            }
            assert_eq!(l.dict == DictLayout::Legacy, minor <= 10);
            assert_eq!(l.ht_cached_keys.is_some(), minor >= 11);
        }
    }
}
