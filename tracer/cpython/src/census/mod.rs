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
//! The census collects series and facts; it judges nothing. What it must decide while collecting
//! (which containers to name and describe first, which to search for, which types) it asks the
//! `Rules` its caller gives (tracer's verdict rules); tracer's report judges and ranks the facts.
//!
//! The census is split by concern: `walk` (the gc's lists), `types` (type objects), `objects`
//! (decoding dicts, lists, sets, attributes), `sizes` (what a container's newest items are and
//! weigh), `refs` (the references an object holds), `naming` (module globals, class attributes,
//! frame locals, one level below them), `backref` (the reference path of a growing container no
//! short path names, found by a back-reference search within a time budget per pass), `describe`
//! (which containers and types get a name, a description, a search), `uses` (the code that uses a
//! container, the sampled paths to it), `tasks` (asyncio tasks), `facts` (what a census says);
//! this file runs the passes and follows the containers.

mod backref;
mod describe;
mod facts;
mod naming;
mod objects;
mod refs;
mod sizes;
mod tasks;
mod types;
mod uses;
mod walk;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::frame::Frame;
use crate::frames::Runtime;
use crate::layouts::Layout;
use crate::mem::{self, Memory, Pages};
use crate::procfs;
use backref::Searches;
use naming::Root;
use objects::Reader;
use types::{Kind, TypeCache};

/// Lists, dicts and sets are followed from this length on.
const MIN_LEN: u64 = 64;
const MAX_FOLLOWED: usize = 50_000;
/// Containers named and described per pass (the rules' first: growing first, then the largest).
const DESCRIBED: usize = 16;
/// Generators and coroutines whose frames are read, per pass.
const MAX_GENERATORS: usize = 10_000;
/// Uses of a container kept.
const MAX_USES: usize = 8;
/// Distinct sampled stacks kept per process.
const MAX_STACK_SAMPLES: usize = 20_000;

pub use facts::{CensusFacts, ContainerFacts, Holds, TaskFacts, TasksFacts, TypeFacts};

/// A series: (seconds since tracing began, count) at each pass.
pub type Points = [(f64, u64)];

/// The rules the census asks while it collects (it judges nothing itself): given by its caller
/// (tracer's verdict rules), kept for its life.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Containers' length series, in the order to describe them (the most worth it first): each
    /// one's index, and whether its length is judged growing.
    pub rank: fn(&[&Points]) -> Vec<(usize, bool)>,
    /// A container is suspect: reason enough to look for its name and sample the stacks that
    /// use it (growing, or rising pass after pass before a verdict can say).
    pub suspect: fn(&Points) -> bool,
    /// A class's object count is judged growing (where one of its objects is held is searched).
    pub objects_growing: fn(&Points) -> bool,
}

impl Rules {
    /// Nothing grows, nothing is suspect, the longest containers first: what the verdict rules
    /// say before a series has the points to judge (one pass over recorded pages, in tests).
    pub const NONE_GROWING: Rules = Rules {
        rank: |series| {
            let mut v: Vec<usize> = (0..series.len()).collect();
            v.sort_by_key(|&i| std::cmp::Reverse(series[i].last().map_or(0, |p| p.1)));
            v.into_iter().map(|i| (i, false)).collect()
        },
        suspect: |_| false,
        objects_growing: |_| false,
    };
}

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
    /// What it asks while collecting.
    rules: Rules,
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
    /// `runtime`, `type_type`: runtime addresses of `_PyRuntime` and `PyType_Type`; `rules`: what
    /// it asks while collecting.
    pub fn new(
        pid: u32,
        layout: &'static Layout,
        runtime: u64,
        type_type: u64,
        rules: Rules,
    ) -> Census {
        let mem = Arc::new(mem::Process(pid));
        Census::with_memory(pid, mem, layout, runtime, type_type, rules)
    }

    /// The same over any `Memory` (recorded pages, in tests).
    pub fn with_memory(
        pid: u32,
        mem: Arc<dyn Memory + Send + Sync>,
        layout: &'static Layout,
        runtime: u64,
        type_type: u64,
        rules: Rules,
    ) -> Census {
        Census {
            pid,
            mem,
            layout,
            rules,
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
            .any(|f| matches!(f.root, Some(Root::Global(..))) && (self.rules.suspect)(&f.series));
        if let Some(rt) = rt {
            self.find_uses(&mem, rt, &pass.functions);
        }
        self.last_ms = t0.elapsed().as_secs_f64() * 1e3;
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
        let roots = backref::Roots::new(&mut r, &pass.modules, &frames);
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

#[cfg(test)]
mod tests {
    use crate::layouts::{layout_for, DictLayout, GcHeads};

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
