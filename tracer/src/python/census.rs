//! Heap census from outside the process, with no probe at all: walk the gc's generation lists
//! through process_vm_readv (read-only), count the gc-tracked objects by type, follow the length
//! of every big list, dict and set from one pass to the next, and name the ones that keep growing
//! by how they are reachable from a module (`__main__.REQUEST_LOG`, `app.Registry.items`,
//! `__main__.CACHES['users']`). It costs the target nothing (no trap; the tracer reads), works
//! the same on builds that inline pymalloc, and says what a leak is made of.
//!
//! It does not see objects the gc does not track (str, bytes, int, dicts of atomic values...):
//! those are seen through the containers that hold them.
//!
//! The target keeps running while it is read, so a pass is a fuzzy snapshot: every step checks
//! the list's back link, a torn list (an object freed under the walk) ends that generation's walk
//! and marks the pass partial. Containers are matched across passes by address and type.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::frames::{FrameLocals, Runtime};
use super::layouts::{DictLayout, GcHeads, Layout};
use crate::frame::Frame;
use crate::procfs;
use crate::trend::{self, Trend, Verdict};

const PAGE: u64 = 4096;
/// Pages cached during one pass (16 MiB); the cache is emptied when full.
const MAX_PAGES: usize = 4096;
const GC_HEAD: u64 = 16;
const GENERATIONS: u64 = 3;
const GEN_STRIDE: u64 = 24;
/// Low bits of a PyGC_Head link that are flags (3.12+: finalized/collecting in `prev`,
/// unreachable or old-space in `next`). Heads may sit at 4-byte offsets (Debian's 3.13.5).
const LINK_FLAGS: u64 = 3;
/// Objects checked along a candidate gc list before it is trusted.
const HEAD_CHECK_STEPS: usize = 8;
/// Lists, dicts and sets are followed from this length on.
const MIN_LEN: u64 = 64;
const MAX_OBJECTS: u64 = 20_000_000;
const MAX_FOLLOWED: usize = 50_000;
const MAX_ENTRIES: u64 = 1 << 20;
/// Items sampled (the newest) to say what a growing container holds.
const HOLD_SAMPLE: u64 = 16;
/// Containers named and described (growing first, then the largest), and reported.
const DESCRIBED: usize = 16;
const REPORTED: usize = 12;
/// Distinct sampled stacks kept per process.
const MAX_STACK_SAMPLES: usize = 20_000;
/// Values looked into, one level below the modules' globals, when naming.
const MAX_SECOND_LEVEL: usize = 50_000;

// Type flags (the same in every version here).
const INLINE_VALUES: u64 = 1 << 2;
const MANAGED_DICT: u64 = 1 << 4;
const LIST_SUBCLASS: u64 = 1 << 25;
const DICT_SUBCLASS: u64 = 1 << 29;
const TYPE_SUBCLASS: u64 = 1 << 31;

fn word(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
        .unwrap_or(0)
}

/// Target memory read a page at a time, pages cached for one pass.
struct Mem {
    pid: u32,
    pages: HashMap<u64, Option<Box<[u8]>>>,
}

impl Mem {
    fn new(pid: u32) -> Mem {
        Mem {
            pid,
            pages: HashMap::new(),
        }
    }

    fn page(&mut self, base: u64) -> Option<&[u8]> {
        if self.pages.len() >= MAX_PAGES && !self.pages.contains_key(&base) {
            self.pages.clear();
        }
        let pid = self.pid;
        self.pages
            .entry(base)
            .or_insert_with(|| {
                procfs::read_mem(pid, base, PAGE as usize)
                    .ok()
                    .map(Vec::into_boxed_slice)
            })
            .as_deref()
    }

    fn read(&mut self, addr: u64, out: &mut [u8]) -> bool {
        if addr < 0x1000 {
            return false;
        }
        let mut done = 0;
        while done < out.len() {
            let a = addr + done as u64;
            let base = a & !(PAGE - 1);
            let off = (a - base) as usize;
            let n = (PAGE as usize - off).min(out.len() - done);
            match self.page(base) {
                Some(p) => out[done..done + n].copy_from_slice(&p[off..off + n]),
                None => return false,
            }
            done += n;
        }
        true
    }

    fn u64(&mut self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }

    fn bytes(&mut self, addr: u64, len: u64) -> Option<Vec<u8>> {
        if len > 2 * PAGE {
            return procfs::read_mem(self.pid, addr, len as usize).ok();
        }
        let mut b = vec![0u8; len as usize];
        self.read(addr, &mut b).then_some(b)
    }

    /// Drops every cached page: what is read next is read fresh.
    fn clear(&mut self) {
        self.pages.clear();
    }

    /// Drops the cached pages of `addr..addr+len` (read them again, fresh).
    fn forget(&mut self, addr: u64, len: u64) {
        let mut p = addr & !(PAGE - 1);
        while p < addr + len {
            self.pages.remove(&p);
            p += PAGE;
        }
    }
}

#[derive(Debug, Clone)]
struct TypeInfo {
    name: String,
    flags: u64,
    basicsize: u64,
    dictoffset: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    List,
    Dict,
    Set,
    Module,
    Type,
    Function,
    Other,
}

impl TypeInfo {
    fn kind(&self) -> Kind {
        if self.flags & LIST_SUBCLASS != 0 {
            Kind::List
        } else if self.flags & DICT_SUBCLASS != 0 {
            Kind::Dict
        } else if self.flags & TYPE_SUBCLASS != 0 {
            Kind::Type
        } else if self.name == "set" || self.name == "frozenset" {
            Kind::Set
        } else if self.name == "module" {
            Kind::Module
        } else if self.name == "function" {
            Kind::Function
        } else {
            Kind::Other
        }
    }
}

pub use crate::snapshot::census::{CensusReport, ContainerReport, Holds, TypeReport};

/// A list, dict or set followed across passes.
struct Followed {
    type_name: String,
    kind: Kind,
    series: Vec<(f64, u64)>,
    /// How it is reachable (None: not looked for yet; Some(None): not found from a module).
    name: Option<Option<String>>,
    /// What holds it: a module global, or a local of a running frame.
    root: Option<Root>,
    /// The lines that load that global (once growing).
    uses: Option<Vec<Frame>>,
    holds: Option<Holds>,
}

/// The census of one process, pass after pass.
pub struct Census {
    pid: u32,
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
}

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
}

impl Census {
    /// `runtime`, `type_type`: runtime addresses of `_PyRuntime` and `PyType_Type`.
    pub fn new(pid: u32, layout: &'static Layout, runtime: u64, type_type: u64) -> Census {
        Census {
            pid,
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
        }
    }

    /// Adds the Python stacks the threads were running at one moment (read from outside).
    pub fn add_stacks(&mut self, stacks: Vec<Vec<Frame>>) {
        for s in stacks {
            if self.samples.len() < MAX_STACK_SAMPLES || self.samples.contains_key(&s) {
                *self.samples.entry(s).or_default() += 1;
            }
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
                p.push(use_label.clone());
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
        let mut mem = Mem::new(self.pid);
        let mut types = TypeCache::new(self.layout);
        let pass = match self.walk(&mut mem, &mut types) {
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
            let name = types
                .get(&mut mem, *ty)
                .map(|t| t.name)
                .unwrap_or_else(|| "?".into());
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
        let frames = rt.as_mut().map(|rt| rt.frame_locals()).unwrap_or_default();
        let mut lens = pass.lens;
        let mut globals_named = HashMap::new();
        {
            let mut r = Reader {
                mem: &mut mem,
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
                let Some(info) = types.get(&mut mem, ty) else {
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
        self.describe(&mut mem, &mut types, &pass.modules);
        // Sampling runs while such a container is judged growing (a healthy service is never
        // sampled).
        self.wants_stacks = self.followed.values().any(|f| {
            matches!(f.root, Some(Root::Global(..))) && judge(&f.series).verdict == Verdict::Growing
        });
        if let Some(rt) = rt {
            self.find_uses(&mut mem, rt, &pass.functions);
        }
        self.last_ms = t0.elapsed().as_secs_f64() * 1e3;
    }

    /// The gc's list heads in the target, each checked live: its links are consistent and the
    /// first objects along it have a type whose type is `type` (or a metaclass). A table's fixed
    /// heads are checked the same way; a debug table gives only the gc state, searched.
    fn heads(&self, mem: &mut Mem) -> Result<Vec<u64>, String> {
        let l = self.layout;
        let mut interp = || {
            mem.u64(self.runtime + l.runtime_interpreters_head)
                .filter(|&a| a != 0)
                .ok_or("cannot read the interpreter state")
        };
        let candidates: Vec<u64> = match l.gc {
            GcHeads::Fixed { offset, in_runtime } => {
                let base = if in_runtime { self.runtime } else { interp()? } + offset;
                (0..GENERATIONS).map(|g| base + g * GEN_STRIDE).collect()
            }
            GcHeads::Search { offset, size } => {
                let base = interp()? + offset;
                (0..size.saturating_sub(GC_HEAD - 1))
                    .step_by(4)
                    .map(|k| base + k)
                    .collect()
            }
        };
        let mut heads: Vec<u64> = Vec::new();
        for c in candidates {
            if heads.last().is_some_and(|&h| c < h + GC_HEAD) {
                continue;
            }
            if self.is_list_head(mem, c).unwrap_or(false) {
                heads.push(c);
            }
        }
        if heads.is_empty() {
            return Err("no gc list head validates in the interpreter's gc state".into());
        }
        Ok(heads)
    }

    /// The gc list heads found now, as offsets from the interpreter state (from `_PyRuntime`
    /// on 3.8), for `tracer doctor`.
    pub fn find_heads(&self) -> Result<Vec<u64>, String> {
        let mut mem = Mem::new(self.pid);
        let heads = self.heads(&mut mem)?;
        let base = match self.layout.gc {
            GcHeads::Fixed {
                in_runtime: true, ..
            } => self.runtime,
            _ => mem
                .u64(self.runtime + self.layout.runtime_interpreters_head)
                .unwrap_or(0),
        };
        Ok(heads.iter().map(|h| h.wrapping_sub(base)).collect())
    }

    /// Is there a gc list head (PyGC_Head of a circular list) at `c`?
    fn is_list_head(&self, mem: &mut Mem, c: u64) -> Option<bool> {
        let next = mem.u64(c)? & !LINK_FLAGS;
        let prev = mem.u64(c + 8)? & !LINK_FLAGS;
        if next == c && prev == c {
            return Some(true); // an empty list
        }
        if next < 0x1000 || prev < 0x1000 || next == c || prev == c {
            return Some(false);
        }
        if mem.u64(next + 8)? & !LINK_FLAGS != c || mem.u64(prev)? & !LINK_FLAGS != c {
            return Some(false);
        }
        let (mut back, mut cur) = (c, next);
        for _ in 0..HEAD_CHECK_STEPS {
            if cur == c {
                break;
            }
            if mem.u64(cur + 8)? & !LINK_FLAGS != back {
                return Some(false);
            }
            let ty = mem.u64(cur + GC_HEAD + 8)?;
            let meta = mem.u64(ty + 8)?;
            if meta != self.type_type && mem.u64(meta + 8)? != self.type_type {
                return Some(false);
            }
            back = cur;
            cur = mem.u64(cur)? & !LINK_FLAGS;
        }
        Some(true)
    }

    /// The heads to walk this pass. They are found once (their positions do not change for the
    /// process's life; a table's fixed heads must all validate) and checked again every pass: a
    /// head caught mid-change by the gc is skipped and the pass marked partial, so its counts
    /// are not taken for a drop.
    fn pass_heads(&mut self, mem: &mut Mem) -> Result<(Vec<u64>, bool), String> {
        if let Some(known) = &self.known_heads {
            let mut ok = Vec::new();
            for &h in known {
                if self.is_list_head(mem, h).unwrap_or(false) {
                    ok.push(h);
                }
            }
            let complete = ok.len() == known.len();
            return Ok((ok, complete));
        }
        let heads = self.heads(mem)?;
        if matches!(self.layout.gc, GcHeads::Fixed { .. }) && heads.len() < GENERATIONS as usize {
            return Err("a gc generation list does not validate".into());
        }
        self.known_heads = Some(heads.clone());
        Ok((heads, true))
    }

    fn walk(&mut self, mem: &mut Mem, types: &mut TypeCache) -> Result<Pass, String> {
        let l = self.layout;
        let (heads, complete) = self.pass_heads(mem)?;
        let mut p = Pass {
            complete,
            ..Default::default()
        };
        for head in heads {
            let first = mem
                .u64(head)
                .ok_or("cannot read the gc's generation lists")?;
            let mut prev = head;
            let mut cur = first & !LINK_FLAGS;
            // gc head (next, prev), then the object: refcount, type, and the words after
            // (list ob_size, dict ma_used; set used).
            let mut hdr = [0u8; 48];
            while cur != head {
                if p.objects >= MAX_OBJECTS || !mem.read(cur, &mut hdr) {
                    p.complete = false;
                    break;
                }
                if word(&hdr, 8) & !LINK_FLAGS != prev {
                    // A stale page, or the list changed under the walk: look again, fresh.
                    mem.forget(cur, hdr.len() as u64);
                    if !mem.read(cur, &mut hdr) || word(&hdr, 8) & !LINK_FLAGS != prev {
                        p.complete = false;
                        break;
                    }
                }
                let obj = cur + GC_HEAD;
                let ty = word(&hdr, 24);
                *p.by_type.entry(ty).or_default() += 1;
                let at = |off: u64| word(&hdr, (GC_HEAD + off) as usize);
                let len = match types.get(mem, ty).map(|t| t.kind()) {
                    Some(Kind::List) => Some(at(l.list_size)),
                    Some(Kind::Dict) => Some(at(16)),
                    Some(Kind::Set) => Some(at(l.set_used)),
                    Some(Kind::Module) => {
                        p.modules.push(obj);
                        None
                    }
                    Some(Kind::Function) => {
                        p.functions.push(obj);
                        None
                    }
                    _ => None,
                };
                if let Some(len) = len {
                    if len >= MIN_LEN || self.followed.contains_key(&(obj, ty)) {
                        p.lens.push((obj, ty, len));
                    }
                }
                p.objects += 1;
                prev = cur;
                cur = word(&hdr, 0) & !LINK_FLAGS;
            }
        }
        Ok(p)
    }

    /// The growing containers, and the largest others, get a name and a description of what they
    /// hold (once: a name is kept for the container's life).
    fn describe(&mut self, mem: &mut Mem, types: &mut TypeCache, modules: &[u64]) {
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
        order.sort_by(|a, b| rank(&a.1, a.2, &b.1, b.2));
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

    /// For each container hanging from a module global: the lines of the functions of that
    /// module that load the global (found once). For a local: the line its frame runs.
    fn find_uses(&mut self, mem: &mut Mem, rt: &mut Runtime, functions: &[u64]) {
        let l = self.layout;
        for f in self.followed.values_mut() {
            if f.uses.is_some() {
                continue;
            }
            let (dict, global) = match &f.root {
                Some(Root::Global(d, g)) => (d, g),
                Some(Root::Local(frame, _)) => {
                    f.uses = Some(vec![frame.clone()]);
                    continue;
                }
                None => continue,
            };
            let mut uses = Vec::new();
            for &func in functions {
                if mem.u64(func + l.func_globals) != Some(*dict) {
                    continue;
                }
                let Some(code) = mem.u64(func + l.func_code) else {
                    continue;
                };
                for u in rt.global_uses(code, global) {
                    if !uses.contains(&u) && uses.len() < 8 {
                        uses.push(u);
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
        // Growing first, then the ones a reader can place (named), then by size.
        containers.sort_by(|a, b| {
            let growing = |c: &ContainerReport| c.trend.verdict == Verdict::Growing;
            growing(&b.0)
                .cmp(&growing(&a.0))
                .then(b.0.named.cmp(&a.0.named))
                .then(rank(&a.0.trend, a.0.len, &b.0.trend, b.0.len))
                .then(a.1.cmp(&b.1))
        });
        let mut types: Vec<TypeReport> = self
            .types
            .iter()
            .map(|(name, s)| TypeReport {
                name: name.clone(),
                count: s.last().map(|p| p.1).unwrap_or(0),
                trend: judge(s),
            })
            .filter(|t| t.count > 0)
            .collect();
        types.sort_by(|a, b| rank(&a.trend, a.count, &b.trend, b.count).then(a.name.cmp(&b.name)));
        types.truncate(10);
        CensusReport {
            passes: self.passes,
            partial: self.partial,
            last_ms: self.last_ms,
            objects: self.objects,
            stack_samples: self.samples.values().sum(),
            rss: self.rss.last().map(|p| p.1).unwrap_or(0),
            rss_trend: {
                let s: Vec<(f64, f64)> = self.rss.iter().map(|&(t, v)| (t, v as f64)).collect();
                // Noise floor: 1 MiB or 2% of the resident size.
                let last = s.last().map(|p| p.1).unwrap_or(0.0);
                trend::judge(&s, (last * 0.02).max(1048576.0))
            },
            containers: containers.into_iter().map(|c| c.0).take(REPORTED).collect(),
            types,
            error: self.error.clone(),
        }
    }
}

/// 3.8-3.10: bytes per slot of a dict's index table of `size` slots.
fn legacy_index_bytes(size: u64) -> u64 {
    if size <= 0xff {
        1
    } else if size <= 0xffff {
        2
    } else if size <= 0xffff_ffff {
        4
    } else {
        8
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

/// Growing first (fastest first), then by size.
fn rank(a: &Trend, alen: u64, b: &Trend, blen: u64) -> std::cmp::Ordering {
    let ga = a.verdict == Verdict::Growing;
    let gb = b.verdict == Verdict::Growing;
    gb.cmp(&ga)
        .then_with(|| {
            if ga {
                b.per_min.total_cmp(&a.per_min)
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .then(blen.cmp(&alen))
}

/// Verdict on a count series: a gain of at least 16 items (or 1% of the size) counts as growth.
fn judge(series: &[(f64, u64)]) -> Trend {
    let s: Vec<(f64, f64)> = series.iter().map(|&(t, v)| (t, v as f64)).collect();
    let last = s.last().map(|p| p.1).unwrap_or(0.0);
    trend::judge(&s, (last * 0.01).max(16.0))
}

struct TypeCache {
    layout: &'static Layout,
    types: HashMap<u64, Option<TypeInfo>>,
}

impl TypeCache {
    fn new(layout: &'static Layout) -> TypeCache {
        TypeCache {
            layout,
            types: HashMap::new(),
        }
    }

    fn get(&mut self, mem: &mut Mem, ty: u64) -> Option<TypeInfo> {
        if let Some(t) = self.types.get(&ty) {
            return t.clone();
        }
        let t = read_type(mem, self.layout, ty);
        self.types.insert(ty, t.clone());
        t
    }
}

fn read_type(mem: &mut Mem, l: &Layout, ty: u64) -> Option<TypeInfo> {
    let span = [l.tp_name, l.tp_flags, l.tp_basicsize, l.tp_dictoffset]
        .into_iter()
        .max()
        .unwrap()
        + 8;
    let b = mem.bytes(ty, span)?;
    let name_at = word(&b, l.tp_name as usize);
    let mut name = Vec::new();
    let mut a = name_at;
    while name.len() < 120 {
        let mut c = [0u8; 1];
        if !mem.read(a, &mut c) || c[0] == 0 {
            break;
        }
        name.push(c[0]);
        a += 1;
    }
    if name.is_empty() {
        return None;
    }
    Some(TypeInfo {
        name: String::from_utf8_lossy(&name).into_owned(),
        flags: word(&b, l.tp_flags as usize),
        basicsize: word(&b, l.tp_basicsize as usize),
        dictoffset: word(&b, l.tp_dictoffset as usize) as i64,
    })
}

/// A name from a module, and the module global it hangs from (module dict, global name).
type Named = (String, Root);

/// Where a named container hangs from.
#[derive(Debug, Clone, PartialEq)]
enum Root {
    /// A module global: (module dict, global name).
    Global(u64, String),
    /// A local variable of a running frame (the line it runs), and the stack down to that
    /// frame, root first.
    Local(Frame, Vec<Frame>),
}

/// Reads objects of one pass.
struct Reader<'a> {
    mem: &'a mut Mem,
    types: &'a mut TypeCache,
    layout: &'static Layout,
}

impl Reader<'_> {
    fn type_of(&mut self, obj: u64) -> Option<TypeInfo> {
        let ty = self.mem.u64(obj + 8)?;
        self.types.get(self.mem, ty)
    }

    /// A str object's text (compact ASCII or Latin-1; others are not names).
    fn string(&mut self, addr: u64) -> Option<String> {
        let l = self.layout;
        let state = self.mem.u64(addr + l.unicode_state)? as u32;
        let len = self.mem.u64(addr + l.unicode_length)?;
        let (kind, compact, ascii) = (
            (state >> 2) & 7,
            state & (1 << 5) != 0,
            state & (1 << 6) != 0,
        );
        if !compact || kind != 1 || len > 200 {
            return None;
        }
        let data = if ascii { l.ascii_data } else { l.compact_data };
        let b = self.mem.bytes(addr + data, len)?;
        Some(b.iter().map(|&c| c as char).collect())
    }

    /// A dict's (key, value) pairs in insertion order.
    fn dict_items(&mut self, d: u64) -> Vec<(u64, u64)> {
        self.dict_items_opt(d).unwrap_or_default()
    }

    fn dict_items_opt(&mut self, d: u64) -> Option<Vec<(u64, u64)>> {
        let keys = self.mem.u64(d + self.layout.dict_keys)?;
        let values = self.mem.u64(d + self.layout.dict_values).unwrap_or(0);
        let (entries, n, esz, key_off, val_off) = self.keys_table(keys)?;
        let table = self.mem.bytes(entries, n * esz)?;
        let vals = if values != 0 {
            let at = values + self.values_header();
            Some(self.mem.bytes(at, n * 8)?)
        } else {
            None
        };
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            let key = word(&table, i * esz as usize + key_off);
            let val = match &vals {
                Some(v) => word(v, i * 8),
                None => word(&table, i * esz as usize + val_off),
            };
            if key != 0 && val != 0 {
                out.push((key, val));
            }
        }
        Some(out)
    }

    /// Where a PyDictKeysObject's entries are: (address, count, entry size, key and value
    /// offsets in an entry).
    fn keys_table(&mut self, keys: u64) -> Option<(u64, u64, u64, usize, usize)> {
        let h = self.mem.bytes(keys, 40)?;
        if self.layout.dict == DictLayout::Legacy {
            let size = word(&h, 8);
            let n = word(&h, 32);
            if n > MAX_ENTRIES || size > 4 * MAX_ENTRIES || n > size {
                return None;
            }
            Some((keys + 40 + size * legacy_index_bytes(size), n, 24, 8, 16))
        } else {
            let index_bytes = h[9] as u32;
            let kind = h[10];
            let n = word(&h, 24);
            if n > MAX_ENTRIES || index_bytes > 40 {
                return None;
            }
            let entries = keys + 32 + (1u64 << index_bytes);
            // DICT_KEYS_GENERAL: hash, key, value; unicode and split keys: key, value.
            Some(if kind == 0 {
                (entries, n, 24, 8, 16)
            } else {
                (entries, n, 16, 0, 8)
            })
        }
    }

    /// The size of a dict's own keys table (not shared with other dicts), as sys.getsizeof counts.
    fn dict_keys_size(&mut self, d: u64) -> Option<u64> {
        let keys = self.mem.u64(d + self.layout.dict_keys)?;
        let h = self.mem.bytes(keys, 40)?;
        if word(&h, 0) != 1 || self.mem.u64(d + self.layout.dict_values)? != 0 {
            return Some(0); // shared (split) keys or values: counted elsewhere
        }
        let usable = |size: u64| size * 2 / 3;
        Some(if self.layout.dict == DictLayout::Legacy {
            let size = word(&h, 8).min(1 << 32);
            40 + size * legacy_index_bytes(size) + 24 * usable(size)
        } else {
            let (log2_size, index_bytes, kind) = (h[8] as u32, h[9] as u32, h[10]);
            if log2_size > 32 || index_bytes > 40 {
                return None;
            }
            let esz = if kind == 0 { 24 } else { 16 };
            32 + (1u64 << index_bytes) + esz * usable(1u64 << log2_size)
        })
    }

    /// Bytes before the values of a PyDictValues.
    fn values_header(&self) -> u64 {
        if self.layout.dict == DictLayout::Log2Inline {
            8
        } else {
            0
        }
    }

    /// An instance's attributes (name, value), from its dict or its inline values.
    fn attributes(&mut self, obj: u64, t: &TypeInfo) -> Vec<(u64, u64)> {
        let dict_at = |o: u64, off: i64| (off > 0).then(|| o.wrapping_add(off as u64));
        let managed = t.flags & MANAGED_DICT != 0;
        let dict = match self.layout.dict {
            DictLayout::Legacy => dict_at(obj, t.dictoffset).and_then(|a| self.mem.u64(a)),
            _ if !managed => dict_at(obj, t.dictoffset).and_then(|a| self.mem.u64(a)),
            DictLayout::Log2Prevalues => match self.mem.u64(obj - 24) {
                Some(0) => {
                    let v = self.mem.u64(obj - 32).unwrap_or(0);
                    return self.inline_values(obj, v);
                }
                d => d,
            },
            DictLayout::Log2Tagged => match self.mem.u64(obj - 24) {
                Some(w) if w & 1 == 1 => return self.inline_values(obj, w + 1),
                d => d,
            },
            DictLayout::Log2Inline => match self.mem.u64(obj - 24) {
                Some(0) if t.flags & INLINE_VALUES != 0 => {
                    let v = obj + t.basicsize;
                    // PyDictValues.valid
                    let mut valid = [0u8; 1];
                    if !self.mem.read(v + 3, &mut valid) || valid[0] == 0 {
                        return Vec::new();
                    }
                    return self.inline_values(obj, v);
                }
                d => d,
            },
        };
        match dict {
            Some(d) if d != 0 => self.dict_items(d),
            _ => Vec::new(),
        }
    }

    /// Attributes kept as values outside a dict (3.11+), named by the type's shared keys.
    fn inline_values(&mut self, obj: u64, values: u64) -> Vec<(u64, u64)> {
        (|| {
            if values == 0 {
                return None;
            }
            let ty = self.mem.u64(obj + 8)?;
            let keys = self.mem.u64(ty + self.layout.ht_cached_keys?)?;
            let (entries, n, esz, key_off, _) = self.keys_table(keys)?;
            let table = self.mem.bytes(entries, n * esz)?;
            let vals = self.mem.bytes(values + self.values_header(), n * 8)?;
            Some(
                (0..n as usize)
                    .map(|i| (word(&table, i * esz as usize + key_off), word(&vals, i * 8)))
                    .filter(|&(k, v)| k != 0 && v != 0)
                    .collect(),
            )
        })()
        .unwrap_or_default()
    }

    /// An object's keyed references one step below it (key object, value): a dict's items, a
    /// class's or an instance's attributes; and whether a key is written as `.attr` (else
    /// `["key"]`).
    fn members(&mut self, obj: u64, t: &TypeInfo) -> Option<(Vec<(u64, u64)>, bool)> {
        match t.kind() {
            Kind::Dict => Some((self.dict_items(obj), false)),
            Kind::Type => Some((
                match self.mem.u64(obj + self.layout.tp_dict) {
                    Some(d) if d != 0 => self.dict_items(d),
                    _ => Vec::new(),
                },
                true,
            )),
            Kind::Other => Some((self.attributes(obj, t), true)),
            _ => None,
        }
    }

    /// How a member is written after its owner's name: `.attr` or `["key"]` (a str key only).
    fn member_label(&mut self, key: u64, dot: bool) -> Option<String> {
        let k = self.string(key)?;
        Some(if dot {
            format!(".{k}")
        } else {
            format!("[{k:?}]")
        })
    }

    /// The references one level below an object, with how to write them after its name.
    fn children(&mut self, obj: u64) -> Vec<(String, u64)> {
        let Some(t) = self.type_of(obj) else {
            return Vec::new();
        };
        if let Some((items, dot)) = self.members(obj, &t) {
            return items
                .into_iter()
                .map(|(k, v)| {
                    let label = self.member_label(k, dot);
                    (label.unwrap_or_else(|| "[...]".to_string()), v)
                })
                .collect();
        }
        match t.kind() {
            Kind::List => {
                let len = self.mem.u64(obj + self.layout.list_size).unwrap_or(0);
                let items = self.mem.u64(obj + self.layout.list_items).unwrap_or(0);
                if len == 0 || len > 4096 {
                    return Vec::new();
                }
                let b = self.mem.bytes(items, len * 8).unwrap_or_default();
                (0..len as usize)
                    .map(|i| (format!("[{i}]"), word(&b, i * 8)))
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    /// Every module's name and globals dict: __main__ first, then the application's modules
    /// before the library's (shorter names first, private names last).
    fn module_dicts(&mut self, modules: &[u64]) -> Vec<(String, u64)> {
        let mut mods: Vec<(String, u64)> = modules
            .iter()
            .filter_map(|&m| {
                let l = self.layout;
                let dict = self.mem.u64(m + l.module_dict).filter(|&d| d != 0)?;
                let name = self
                    .mem
                    .u64(m + l.module_name)
                    .and_then(|n| self.string(n))?;
                Some((name, dict))
            })
            .collect();
        mods.sort_by_key(|(n, _)| (n != "__main__", n.starts_with('_'), n.len(), n.clone()));
        mods.dedup_by_key(|m| m.1);
        mods
    }

    /// The lists, dicts and sets that module globals hold, and one step below them (an
    /// object's attributes, a dict's values): ((name, root), object, type, len).
    fn module_containers(&mut self, modules: &[u64]) -> Vec<(Named, u64, u64, u64)> {
        let mut out = Vec::new();
        let mut budget = MAX_SECOND_LEVEL;
        let mut looked = HashSet::new();
        for (mname, d) in self.module_dicts(modules) {
            for (k, v) in self.dict_items(d) {
                let Some(k) = self.string(k) else { continue };
                let below = !k.starts_with("__");
                let root = Root::Global(d, k.clone());
                self.held(
                    &format!("{mname}.{k}"),
                    &root,
                    v,
                    below,
                    &mut budget,
                    &mut looked,
                    &mut out,
                );
            }
        }
        out
    }

    /// The same for the locals of running frames: `function() local name`.
    fn local_containers(&mut self, frames: &[FrameLocals]) -> Vec<(Named, u64, u64, u64)> {
        let mut out = Vec::new();
        let mut budget = MAX_SECOND_LEVEL;
        let mut looked = HashSet::new();
        for f in frames {
            let root = Root::Local(f.label.clone(), f.stack.clone());
            for (name, v) in &f.locals {
                let label = format!("{}() local {name}", f.function);
                self.held(&label, &root, *v, true, &mut budget, &mut looked, &mut out);
            }
        }
        out
    }

    /// `v`, named `label`, if it is a container; and, with `below`, the containers its
    /// attributes or values hold.
    #[allow(clippy::too_many_arguments)]
    fn held(
        &mut self,
        label: &str,
        root: &Root,
        v: u64,
        below: bool,
        budget: &mut usize,
        looked: &mut HashSet<u64>,
        out: &mut Vec<(Named, u64, u64, u64)>,
    ) {
        let Some(t) = self.type_of(v) else { return };
        let kind = t.kind();
        let ty = self.mem.u64(v + 8).unwrap_or(0);
        if let Some(len) = self.len_of(v, kind) {
            out.push(((label.to_string(), root.clone()), v, ty, len));
        }
        // One level below: containers held by an object's attributes or a dict's values. (The
        // walk finds the tracked ones; a dict of strings is not tracked.)
        if !below || !matches!(kind, Kind::Dict | Kind::Other) || *budget == 0 || !looked.insert(v)
        {
            return;
        }
        let Some((items, dot)) = self.members(v, &t) else {
            return;
        };
        for (ck, c) in items.into_iter().take(*budget) {
            *budget -= 1;
            let Some(ct) = self.type_of(c) else { continue };
            let Some(clen) = self.len_of(c, ct.kind()) else {
                continue;
            };
            let Some(suffix) = self.member_label(ck, dot) else {
                continue;
            };
            let name = format!("{label}{suffix}");
            let cty = self.mem.u64(c + 8).unwrap_or(0);
            out.push(((name, root.clone()), c, cty, clen));
        }
    }

    /// The length of a list, dict or set.
    fn len_of(&mut self, obj: u64, kind: Kind) -> Option<u64> {
        match kind {
            Kind::List => self.mem.u64(obj + self.layout.list_size),
            Kind::Dict => self.mem.u64(obj + 16),
            Kind::Set => self.mem.u64(obj + self.layout.set_used),
            _ => None,
        }
    }

    /// Names the `wanted` objects by a path from a module's globals (two levels at most):
    /// `module.global`, then `module.global[key]`, `module.Class.attr`, `module.obj.attr`.
    /// Returns each found object's name and the module global it hangs from.
    fn name_all(&mut self, modules: &[u64], wanted: &HashSet<u64>) -> HashMap<u64, Named> {
        let mods = self.module_dicts(modules);
        let mut found: HashMap<u64, Named> = HashMap::new();
        let mut below = Vec::new();
        for (mname, d) in &mods {
            for (k, v) in self.dict_items(*d) {
                let Some(k) = self.string(k) else { continue };
                let label = format!("{mname}.{k}");
                if wanted.contains(&v) {
                    found.entry(v).or_insert((label, Root::Global(*d, k)));
                } else if below.len() < MAX_SECOND_LEVEL && !k.starts_with("__") {
                    below.push((label, Root::Global(*d, k), v));
                }
            }
        }
        let mut looked = HashSet::new();
        for (label, root, v) in below {
            if found.len() == wanted.len() {
                break;
            }
            if !looked.insert(v) {
                continue;
            }
            for (suffix, c) in self.children(v) {
                if wanted.contains(&c) {
                    found
                        .entry(c)
                        .or_insert_with(|| (format!("{label}{suffix}"), root.clone()));
                }
            }
        }
        found
    }

    /// What the newest items of a container are: their types and mean shallow size.
    fn holds(&mut self, obj: u64, kind: Kind, len: u64) -> Option<Holds> {
        // Read fresh: the pages cached by the walk are older than what a growing container holds
        // now, and a table read half before and half after the container grew (a dict resized,
        // a list's item array moved) would describe freed memory. The container's table pointer
        // must be the same after the items are read, or nothing is said this pass.
        self.mem.clear();
        let table_at = match kind {
            Kind::List => obj + self.layout.list_items,
            Kind::Dict => obj + self.layout.dict_keys,
            _ => return None,
        };
        let table = self.mem.u64(table_at)?;
        let items: Vec<u64> = match kind {
            Kind::List => {
                let len = self.mem.u64(obj + 16)?.min(len.max(1) * 2);
                let n = len.min(HOLD_SAMPLE);
                let b = self.mem.bytes(table + 8 * (len - n), 8 * n)?;
                (0..n as usize).map(|i| word(&b, i * 8)).collect()
            }
            _ => {
                let all = self.dict_items(obj);
                let skip = all.len().saturating_sub(HOLD_SAMPLE as usize);
                all[skip..].iter().map(|e| e.1).collect()
            }
        };
        self.mem.forget(table_at, 8);
        if self.mem.u64(table_at)? != table {
            return None;
        }
        let mut by: HashMap<String, u64> = HashMap::new();
        let mut bytes = 0u64;
        let mut deep = 0u64;
        let mut n = 0u64;
        for it in items {
            let Some(t) = self.type_of(it) else { continue };
            let own = self.shallow_size(it, &t);
            bytes += own;
            deep += own + self.atomic_children_size(it, &t);
            *by.entry(t.name).or_default() += 1;
            n += 1;
        }
        if n == 0 {
            return None;
        }
        let mut types: Vec<(String, u64)> = by.into_iter().collect();
        types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Some(Holds {
            sampled: n,
            types,
            mean_bytes: bytes as f64 / n as f64,
            mean_deep_bytes: deep as f64 / n as f64,
        })
    }

    /// The size of the str, bytes, int and float objects a dict, list or tuple holds directly.
    fn atomic_children_size(&mut self, obj: u64, t: &TypeInfo) -> u64 {
        let children: Vec<u64> = match (t.kind(), t.name.as_str()) {
            (Kind::Dict, _) => self.dict_items(obj).into_iter().map(|e| e.1).collect(),
            (Kind::List, _) | (_, "tuple") => {
                let len = self.mem.u64(obj + 16).unwrap_or(0).min(256);
                let at = if t.kind() == Kind::List {
                    self.mem.u64(obj + self.layout.list_items).unwrap_or(0)
                } else {
                    obj + self.layout.tuple_items
                };
                let b = self.mem.bytes(at, 8 * len).unwrap_or_default();
                (0..len as usize).map(|i| word(&b, 8 * i)).collect()
            }
            _ => return 0,
        };
        let mut total = 0;
        for c in children.into_iter().take(256) {
            if let Some(ct) = self.type_of(c) {
                if matches!(ct.name.as_str(), "str" | "bytes" | "int" | "float") {
                    total += self.shallow_size(c, &ct);
                }
            }
        }
        total
    }

    /// An object's own size, as sys.getsizeof would roughly say (without the gc header).
    fn shallow_size(&mut self, obj: u64, t: &TypeInfo) -> u64 {
        let l = self.layout;
        let var = self.mem.u64(obj + 16).unwrap_or(0).min(1 << 32);
        match t.name.as_str() {
            "str" => {
                let state = self.mem.u64(obj + l.unicode_state).unwrap_or(0) as u32;
                let len = self
                    .mem
                    .u64(obj + l.unicode_length)
                    .unwrap_or(0)
                    .min(1 << 32);
                if state & (1 << 6) != 0 {
                    l.ascii_data + len + 1
                } else {
                    l.compact_data + (len + 1) * u64::from((state >> 2) & 7).max(1)
                }
            }
            "bytes" => l.bytes_data + var + 1,
            "tuple" => t.basicsize + 8 * var,
            "int" => t.basicsize + 4 * var.min(1 << 16),
            "list" => t.basicsize + 8 * self.mem.u64(obj + 32).unwrap_or(0).min(1 << 32),
            "dict" => t.basicsize + self.dict_keys_size(obj).unwrap_or(0),
            _ => t.basicsize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::layouts::layout_for;

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
        assert_eq!(rank(&g, 3600, &s, 8000), std::cmp::Ordering::Less);
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
