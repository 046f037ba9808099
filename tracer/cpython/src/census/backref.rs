//! Reference paths: who holds a growing container that no short path from a module names
//! (`logging.Logger.manager.loggerDict`, `app.PriceService.quote (functools lru_cache)`).
//!
//! A back-reference search over the gc-tracked objects, breadth first: the objects whose bodies
//! point at the container (a dict's values, a list's or tuple's items, a set's entries, an
//! instance's attributes and `__dict__`, a cell, and the words of a C object's basic size, read
//! conservatively), then who holds those, level after level, until a root holds one: a module
//! global or a local of a running frame. A class's attribute dict is read as its class's
//! (`Logger.manager`), weak references are not holders, and a C object of a known kind names
//! its kind (lru_cache wrappers, deques, weak dicts, asyncio tasks).
//!
//! The target runs on while it is read, and a level is one scan of every object: the scan runs
//! within a time budget per census pass and goes on at the next pass where it stopped (a
//! partial level may miss a holder: the path found is then longer, or found later). What is
//! found is never trusted as is: a path is read again, fresh, edge by edge from its root down
//! to the container before it names it, and a path that does not hold is not said.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use super::naming::Root;
use super::objects::Reader;
use super::refs::Via;
use super::types::Kind;
use crate::frames::FrameLocals;
use crate::mem::Memory;

/// Time a census pass gives the search (every search at once).
pub(super) const BUDGET: Duration = Duration::from_millis(300);
/// Containers searched for at once.
const MAX_SEARCHES: usize = 8;
/// Holders kept per level of one search.
const MAX_FRONTIER: usize = 20_000;
/// Levels searched before giving up (a path longer than this is not named).
const MAX_LEVELS: u32 = 16;
/// Objects scanned between two looks at the clock.
const CHUNK: usize = 1024;

/// A container named by a search.
pub(super) struct Found {
    pub target: u64,
    pub name: String,
    pub root: Root,
    /// The key object of the last attribute on the path (see `holding_attr`).
    pub attr: Option<u64>,
    /// The key object of the plain dict the path ends in, after that attribute
    /// (`app.state._state["sessions"]`: `sessions`, which a proxy's `__getattr__` serves as
    /// an attribute).
    pub key: Option<u64>,
}

/// A hasher for object addresses (no need for SipHash's resistance here: the keys are the
/// target's addresses, hashed millions of times per scan).
#[derive(Default)]
pub(super) struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let x = (n ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 29);
    }
}

pub(super) type AddrMap<V> = HashMap<u64, V, BuildHasherDefault<AddrHasher>>;

/// What a search stops at: the values of module globals and of running frames' locals, each
/// with its rank (the application's modules first) and its name.
pub(super) struct Roots {
    by_value: AddrMap<(usize, String, Root)>,
    module_dicts: HashSet<u64>,
}

impl Roots {
    pub(super) fn new(r: &mut Reader, modules: &[u64], frames: &[FrameLocals]) -> Roots {
        let mut by_value: AddrMap<(usize, String, Root)> = AddrMap::default();
        let mut module_dicts = HashSet::new();
        let mods = r.module_dicts(modules);
        for (rank, (mname, d)) in mods.iter().enumerate() {
            module_dicts.insert(*d);
            for (k, v) in r.dict_items(*d) {
                let Some(k) = r.string(k) else { continue };
                if k.starts_with("__") {
                    continue;
                }
                by_value
                    .entry(v)
                    .or_insert_with(|| (rank, format!("{mname}.{k}"), Root::Global(*d, k)));
            }
        }
        let rank = mods.len();
        for f in frames {
            for (name, v) in &f.locals {
                by_value.entry(*v).or_insert_with(|| {
                    (
                        rank,
                        f.local_label(name),
                        Root::Local(f.label.clone(), f.stack.clone()),
                    )
                });
            }
        }
        Roots {
            by_value,
            module_dicts,
        }
    }

    /// Is `v` a module global's value, a class's module global, or a running frame's local?
    fn of(&self, v: u64) -> Option<&(usize, String, Root)> {
        self.by_value.get(&v)
    }
}

/// One container searched for.
struct Search {
    target: u64,
    /// Every holder found: what it holds, one step closer to the target, and how.
    next: AddrMap<(u64, Via)>,
    /// The holders found at the last level (whose holders are looked for now).
    frontier: Vec<u64>,
    /// Holders of the frontier found by this level's scan so far: (holder, how, held).
    found: Vec<(u64, Via, u64)>,
    level: u32,
    /// Objects scanned for this level.
    scanned: usize,
    /// Holders of the last level that are roots (to be verified).
    roots: Vec<u64>,
    /// Passes whose candidate paths did not verify.
    failed: u32,
    done: bool,
}

/// The searches of one process, carried from pass to pass.
#[derive(Default)]
pub(super) struct Searches {
    list: Vec<Search>,
    /// A class's attribute dict -> the class (a dict holder read as the class's attribute).
    type_dicts: AddrMap<u64>,
    /// Where the scan of the object list goes on.
    pos: usize,
    /// Containers whose search ended without a path: not searched for again (a search costs
    /// its budget every pass).
    given_up: HashSet<u64>,
    /// Time spent and objects scanned by the last pass.
    pub(super) last_ms: f64,
    pub(super) last_scanned: u64,
}

/// Weak references do not keep what they point at alive: never holders.
fn weak(type_name: &str) -> bool {
    matches!(
        type_name,
        "weakref" | "weakproxy" | "weakcallableproxy" | "KeyedRef" | "WeakMethod"
    ) || type_name.starts_with("weakref.")
}

/// The kind a holder of a known type gives the container's name.
pub(super) fn holder_kind(type_name: &str) -> Option<&'static str> {
    Some(match type_name {
        "functools._lru_cache_wrapper" => "functools lru_cache",
        "collections.deque" => "deque",
        "collections.defaultdict" => "defaultdict",
        "collections.OrderedDict" => "OrderedDict",
        "WeakValueDictionary" | "WeakKeyDictionary" => "weak dict",
        "WeakSet" => "weak set",
        "_asyncio.Task" => "asyncio task",
        "_asyncio.Future" => "asyncio future",
        _ => return None,
    })
}

impl Searches {
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Is `target` searched for?
    pub(super) fn has(&self, target: u64) -> bool {
        self.list.iter().any(|s| s.target == target)
    }

    /// Searches for `target` from the next pass on (a few containers at once).
    pub(super) fn want(&mut self, target: u64) {
        if self.has(target) || self.list.len() >= MAX_SEARCHES || self.given_up.contains(&target) {
            return;
        }
        self.list.push(Search {
            target,
            next: AddrMap::default(),
            frontier: vec![target],
            found: Vec::new(),
            level: 0,
            scanned: 0,
            roots: Vec::new(),
            failed: 0,
            done: false,
        });
    }

    /// Drops the searches of containers no longer wanted (gone, or named).
    pub(super) fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        for s in &self.list {
            if s.done && keep(s.target) && self.given_up.len() < 10_000 {
                self.given_up.insert(s.target);
            }
        }
        self.list.retain(|s| !s.done && keep(s.target));
    }

    /// Runs the searches over `objects` (object, type) for at most `budget`; returns the
    /// containers named this pass.
    pub(super) fn run(
        &mut self,
        r: &mut Reader,
        objects: &[(u64, u64)],
        roots: &Roots,
        budget: Duration,
    ) -> Vec<Found> {
        let t0 = Instant::now();
        let mut named = Vec::new();
        let mut scanned = 0u64;
        let mut wanted = self.wanted();
        let mut refs = Vec::new();
        while !objects.is_empty() && t0.elapsed() < budget {
            // Paths whose root is reached, read again before they are trusted.
            let mut changed = false;
            for s in self
                .list
                .iter_mut()
                .filter(|s| !s.roots.is_empty() && !s.done)
            {
                match verified(r, s, roots) {
                    Some((name, root, (attr, key))) => {
                        named.push(Found {
                            target: s.target,
                            name,
                            root,
                            attr,
                            key,
                        });
                        s.done = true;
                    }
                    None => {
                        s.failed += 1;
                        s.roots.clear();
                        s.done = s.failed > 3 || s.frontier.is_empty();
                    }
                }
                changed = true;
            }
            if changed {
                wanted = self.wanted();
            }
            if wanted.is_empty() {
                break;
            }
            // One chunk of the object list.
            let n = CHUNK.min(objects.len());
            for _ in 0..n {
                let (obj, ty) = objects[self.pos % objects.len()];
                self.pos = (self.pos + 1) % objects.len();
                let Some(t) = r.types.get(r.mem, ty) else {
                    continue;
                };
                let kind = t.kind();
                if kind == Kind::Type {
                    if let Some(d) = r.mem.u64(obj + r.layout.tp_dict).filter(|&d| d != 0) {
                        self.type_dicts.insert(d, obj);
                    }
                    continue;
                }
                if kind == Kind::Module || weak(&t.name) || roots.module_dicts.contains(&obj) {
                    continue;
                }
                refs.clear();
                r.refs(obj, &t, &mut refs);
                for &(v, via) in &refs {
                    if let Some(idx) = wanted.get(&v) {
                        for &i in idx {
                            self.list[i].found.push((obj, via, v));
                        }
                    }
                }
            }
            scanned += n as u64;
            // Levels whose scan went round every object.
            let mut levels_done = false;
            for s in self.list.iter_mut().filter(|s| !s.done) {
                s.scanned += n;
                if s.scanned >= objects.len() {
                    next_level(s, &self.type_dicts, roots);
                    levels_done = true;
                }
            }
            if levels_done {
                wanted = self.wanted();
            }
        }
        self.last_ms = t0.elapsed().as_secs_f64() * 1e3;
        self.last_scanned = scanned;
        named
    }

    /// Every frontier holder, with the searches that look for its holders.
    fn wanted(&self) -> AddrMap<Vec<usize>> {
        let mut w: AddrMap<Vec<usize>> = AddrMap::default();
        for (i, s) in self.list.iter().enumerate() {
            if s.done || !s.roots.is_empty() {
                continue;
            }
            for &f in &s.frontier {
                w.entry(f).or_default().push(i);
            }
        }
        w
    }
}

/// Ends a level: its holders (a class's attribute dict read as the class) are the next
/// frontier, the roots among them the paths to verify.
fn next_level(s: &mut Search, type_dicts: &AddrMap<u64>, roots: &Roots) {
    let mut new = Vec::new();
    for (holder, via, held) in s.found.drain(..) {
        let (holder, via) = match (type_dicts.get(&holder), via) {
            (Some(&ty), Via::Key(k)) => (ty, Via::Attr(k)),
            _ => (holder, via),
        };
        if holder == s.target || s.next.contains_key(&holder) || new.len() >= MAX_FRONTIER {
            continue;
        }
        s.next.insert(holder, (held, via));
        new.push(holder);
    }
    s.level += 1;
    s.scanned = 0;
    let mut found: Vec<u64> = new
        .iter()
        .copied()
        .filter(|&n| roots.of(n).is_some())
        .collect();
    found.sort_by(|a, b| {
        let (ra, rb) = (roots.of(*a).unwrap(), roots.of(*b).unwrap());
        (ra.0, &ra.1).cmp(&(rb.0, &rb.1))
    });
    s.roots = found;
    s.frontier = new;
    if s.frontier.is_empty() || s.level >= MAX_LEVELS {
        s.done = s.roots.is_empty();
    }
}

/// The path from `root` down to the target: (holder, how, held) steps.
fn path(s: &Search, root: u64) -> Option<Vec<(u64, Via, u64)>> {
    let mut steps = Vec::new();
    let mut at = root;
    while at != s.target {
        let &(held, via) = s.next.get(&at)?;
        steps.push((at, via, held));
        at = held;
        if steps.len() > MAX_LEVELS as usize + 1 {
            return None;
        }
    }
    Some(steps)
}

/// The first root path (best root first) that holds when read again, fresh: its name, root,
/// and the attribute that holds the container.
/// A verified path: its name, its root, and the names the code that feeds it uses
/// (`holding_names`).
type Verified = (String, Root, (Option<u64>, Option<u64>));

fn verified(r: &mut Reader, s: &Search, roots: &Roots) -> Option<Verified> {
    for &root in &s.roots {
        let Some((_, label, how)) = roots.of(root) else {
            continue;
        };
        let Some(steps) = path(s, root) else { continue };
        r.mem.clear();
        if let Root::Global(d, key) = how {
            let holds = r
                .dict_items(*d)
                .into_iter()
                .any(|(k, v)| v == root && r.string(k).as_deref() == Some(key.as_str()));
            if !holds {
                continue;
            }
        }
        if steps.iter().all(|&(h, via, v)| r.holds_ref(h, via, v)) {
            return Some((name(r, label, &steps), how.clone(), holding_names(&steps)));
        }
    }
    None
}

/// The last attribute name on a path (its key object: `loggerDict` in
/// `logging.Logger.manager.loggerDict`, `quote` in `app.PriceService.quote (functools
/// lru_cache)`): the code that grows the container names it (`self.loggerDict[name] = rv`).
/// With it, the key of the plain dict the path ends in after that attribute (if it does).
fn holding_names(steps: &[(u64, Via, u64)]) -> (Option<u64>, Option<u64>) {
    let mut attr = None;
    let mut key = None;
    let mut after_dict = false;
    for &(_, via, _) in steps {
        key = None;
        match via {
            Via::Attr(k) => attr = Some(k),
            Via::Key(k) if after_dict => attr = Some(k),
            Via::Key(k) if attr.is_some() => key = Some(k),
            _ => {}
        }
        after_dict = matches!(via, Via::Dict(_));
    }
    (attr, key)
}

/// A path's name, root first: `.attr` for attributes (and a `__dict__`'s keys), `["key"]`
/// for other dicts' keys, `[i]` for items, the kind of a known C holder.
fn name(r: &mut Reader, root: &str, steps: &[(u64, Via, u64)]) -> String {
    let mut out = root.to_string();
    let mut after_dict = false;
    for (i, &(holder, via, _)) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        let ty = r.type_of(holder).map(|t| t.name).unwrap_or_default();
        let key = |r: &mut Reader, k: u64| r.string(k);
        match via {
            Via::Dict(_) => {
                after_dict = true;
                continue;
            }
            Via::Attr(k) => match key(r, k) {
                Some(k) => out += &format!(".{k}"),
                None => out += ".?",
            },
            Via::Key(k) => match (key(r, k), after_dict) {
                (Some(k), true) => out += &format!(".{k}"),
                (Some(k), false) => out += &format!("[{k:?}]"),
                (None, _) => out += "[...]",
            },
            Via::Item(n) => out += &format!("[{n}]"),
            Via::Member => out += "{...}",
            Via::Field(off) => match holder_kind(&ty) {
                Some(_) if last => {}
                Some(kind) => out += &format!(".<{kind}>"),
                None if ty == "cell" => out += ".cell_contents",
                None => out += &format!(".<{ty} +{off}>"),
            },
        }
        after_dict = false;
        if last {
            if let Some(kind) = holder_kind(&ty) {
                out += &format!(" ({kind})");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_weak_holders() {
        assert_eq!(
            holder_kind("functools._lru_cache_wrapper"),
            Some("functools lru_cache")
        );
        assert_eq!(holder_kind("dict"), None);
        assert!(weak("weakref") && weak("KeyedRef") && weak("weakref.ReferenceType"));
        assert!(!weak("WeakValueDictionary"));
    }

    #[test]
    fn the_holding_attribute_is_the_last_on_the_path() {
        // logging.Logger.manager.loggerDict: class attr, then an instance's __dict__ key.
        let steps = [
            (1, Via::Attr(100), 2),
            (2, Via::Dict(16), 3),
            (3, Via::Key(101), 4),
        ];
        assert_eq!(holding_names(&steps), (Some(101), None));
        // app.PriceService.quote (functools lru_cache): the attribute, then a C field.
        let steps = [(1, Via::Attr(100), 2), (2, Via::Field(40), 3)];
        assert_eq!(holding_names(&steps), (Some(100), None));
        // A plain dict's key is not an attribute; a path of items has none.
        let steps = [(1, Via::Key(7), 2), (2, Via::Item(3), 3)];
        assert_eq!(holding_names(&steps), (None, None));
        // app.state._state["sessions"] (Starlette's State): the attribute, then the key of
        // the plain dict it holds, which the code names as an attribute of the proxy.
        let steps = [
            (1, Via::Attr(100), 2),
            (2, Via::Attr(101), 3),
            (3, Via::Key(102), 4),
        ];
        assert_eq!(holding_names(&steps), (Some(101), Some(102)));
        // A key that is not the last step is not kept.
        let steps = [
            (1, Via::Attr(100), 2),
            (2, Via::Key(102), 3),
            (3, Via::Item(0), 4),
        ];
        assert_eq!(holding_names(&steps), (Some(100), None));
    }

    #[test]
    fn addr_hasher_spreads_aligned_addresses() {
        let mut seen = HashSet::new();
        for i in 0..4096u64 {
            let mut h = AddrHasher::default();
            h.write_u64(0x7f00_0000_0000 + 16 * i);
            seen.insert(h.finish() & 0xfff);
        }
        assert!(seen.len() > 2000, "{}", seen.len());
    }
}
