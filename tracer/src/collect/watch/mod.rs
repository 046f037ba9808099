//! Watch mode (`--budget N`): exact allocation tracing in short, budgeted windows, and the
//! liveness of what a window saw checked afterwards from outside the process.
//!
//! Per probe group, the allocator probes are attached for a short window (`window`), then
//! released; the next window opens when the time armed is the budget's share. The allocations a
//! window saw and that were still alive at its end are its survivors, each kept with its stack
//! and a fingerprint of its first bytes, taken while frees are still traced and read through
//! process_vm_readv (`fingerprint`). Frees after the window are not seen, so each survivor is
//! re-read at every tick: a freed block does not look like the object it held any more (pymalloc
//! and glibc write their free-list links over the first words, a deallocated object's reference
//! count is zero, a reused block holds a different object). A leak keeps adding survivors that
//! stay alive; a cache's survivors die as it replaces entries; garbage dies at the next
//! collection. (The report calls them watch mode's samples: a small share of the allocations.)

mod fingerprint;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Collector;
use crate::config::Mode;
use crate::probes::FileId;
use crate::python::mem::{self, Memory};
use crate::say;
use crate::snapshot::StackKey;
use crate::util::monotonic_ns;
use fingerprint::Fingerprint;

/// Most survivors kept per process (a leak adds a few per window).
const MAX_SURVIVORS: usize = 200_000;

/// Where a group's watch window stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Closed,
    /// Probes attached at this time.
    Open(Instant),
    /// Allocation probes being released, frees still traced (the window opened at this time).
    Closing(Instant),
    /// What the window saw is fingerprinted; the free probes are being released.
    Freeing(Instant),
}

/// An allocation seen by a watch window and still alive at its end: a survivor, followed from
/// outside until its block no longer holds what was fingerprinted.
#[derive(Debug, Clone, Copy)]
pub struct Survivor {
    pub stack: StackKey,
    pub size: u64,
    pub ts_ns: u64,
    pub fp: Fingerprint,
}

/// Watch mode: survivors by address, how many windows ran and for how long the probes were
/// armed in all (windows belong to the process's `ProbeGroup`).
#[derive(Default)]
pub struct WatchState {
    pub survivors: HashMap<u64, Survivor>,
    /// When the last window opened (monotonic ns): survivors from before it have lived at
    /// least one period, and only those count in checkpoints.
    pub window_opened_ns: u64,
    /// Fingerprints of what the closing window saw, by address, taken while frees are traced.
    pub(super) pending: HashMap<u64, Survivor>,
    pub windows: u64,
    pub armed: Duration,
    /// Runtime address of PyType_Type, and addresses already checked for being a type.
    pub(super) type_type: Option<u64>,
    pub(super) types: HashMap<u64, bool>,
}

impl Collector {
    /// Watch mode: opens and closes the allocator windows, one per probe group. Run every
    /// ~10 ms.
    ///
    /// A window's cost is the time its probes are armed: the window itself plus their release
    /// (see `Probes::release_allocator`). The next window opens when that time is `budget`
    /// percent of the time since this one opened.
    pub fn windows(&mut self) {
        if !self.windowed() {
            return;
        }
        let now = Instant::now();
        for g in 0..self.groups.len() {
            let file = self.groups[g].file;
            let members = self.members(file);
            match self.groups[g].window {
                Window::Open(since)
                    if members.is_empty() || now.duration_since(since) >= self.window =>
                {
                    self.probes.release_allocator(file, true);
                    self.groups[g].window = Window::Closing(since);
                }
                Window::Closing(since) | Window::Freeing(since) => {
                    if let Some(armed) = self.close_step(g) {
                        self.groups[g].next_window = since + armed.mul_f64(100.0 / self.budget);
                        self.harvested = true;
                    }
                }
                Window::Closed if !members.is_empty() && now >= self.groups[g].next_window => {
                    // Attached through a live process's view of the file.
                    let interp = &self.targets[members[0]].interp;
                    let hooks = crate::probes::watch_hooks(&interp.alloc.hooks);
                    match self.probes.attach_allocator(interp, &hooks) {
                        Ok(_) => {
                            self.groups[g].window = Window::Open(now);
                            let opened = monotonic_ns();
                            for i in members {
                                self.targets[i].watch.windows += 1;
                                self.targets[i].watch.window_opened_ns = opened;
                            }
                        }
                        Err(e) => {
                            say!("tracer: {e}; retrying later");
                            self.groups[g].next_window =
                                now + self.window.mul_f64(100.0 / self.budget);
                        }
                    }
                }
                _ => {}
            }
        }
        // Groups whose processes all exited, once their window is closed.
        let idle: Vec<FileId> = self
            .groups
            .iter()
            .filter(|g| g.window == Window::Closed)
            .map(|g| g.file)
            .filter(|&f| self.members(f).is_empty())
            .collect();
        self.groups.retain(|g| !idle.contains(&g.file));
    }

    /// Watch mode with a budget: allocator probes in windows. (`--budget 0`: none at all; the
    /// heap census and the descriptors only.)
    pub fn windowed(&self) -> bool {
        self.mode == Mode::Watch && self.budget > 0.0
    }

    /// When `windows` next has something to do (None outside watch mode).
    pub fn next_window_event(&self) -> Option<Instant> {
        if !self.windowed() {
            return None;
        }
        let poll = Instant::now() + Duration::from_millis(10);
        self.groups
            .iter()
            .map(|g| match g.window {
                Window::Open(since) => since + self.window,
                Window::Closing(_) | Window::Freeing(_) => poll,
                Window::Closed => g.next_window,
            })
            .min()
    }

    /// Was a window harvested since the last call?
    pub fn take_harvested(&mut self) -> bool {
        std::mem::take(&mut self.harvested)
    }

    /// One step in closing a group's window, once the probes released by the previous step are
    /// gone. The window's allocations are fingerprinted while the free probes still remove what
    /// dies (a block freed unseen and reused by another object would otherwise be fingerprinted
    /// as that object, and live on under the window's stack); the free probes go next, and what
    /// is still in the map then becomes survivors. Returns the time the probes were armed when
    /// done.
    fn close_step(&mut self, g: usize) -> Option<Duration> {
        let file = self.groups[g].file;
        if !self.probes.released(file) {
            return None;
        }
        let members = self.members(file);
        match self.groups[g].window {
            Window::Closing(since) => {
                for &i in &members {
                    self.fingerprint_window(i);
                }
                self.probes.release_allocator(file, false);
                self.groups[g].window = Window::Freeing(since);
                None
            }
            Window::Freeing(since) => {
                let armed = since.elapsed();
                for &i in &members {
                    self.harvest(i);
                    self.targets[i].watch.armed += armed;
                }
                self.groups[g].window = Window::Closed;
                Some(armed)
            }
            _ => None,
        }
    }

    /// Fingerprints the allocations the window saw that hold a Python object.
    fn fingerprint_window(&mut self, i: usize) {
        let pid = self.targets[i].pid;
        let mut seen = Vec::new();
        self.probes.for_each_alloc(|k, a| {
            if k.pid == pid {
                seen.push((*k, *a));
            }
        });
        let t = &mut self.targets[i];
        // PyObject.ob_type's offset, from the build's layout (8 in every CPython 3).
        let ob_type = t.interp.layout().map_or(8, |l| l.ob_type);
        t.watch.pending.clear();
        for (k, a) in seen {
            if t.watch.survivors.len() + t.watch.pending.len() >= MAX_SURVIVORS {
                break;
            }
            let Some(bytes) =
                mem::Process(pid).bytes(k.addr, (a.size as usize).min(8 * fingerprint::WORDS))
            else {
                continue;
            };
            // The type candidates (words 1, 3, 5), checked against the target's memory.
            let w = fingerprint::words_of(&bytes);
            let known: HashMap<u64, bool> = [w[1], w[3], w[5]]
                .into_iter()
                .map(|c| {
                    (
                        c,
                        is_type_object(pid, ob_type, t.watch.type_type, &mut t.watch.types, c),
                    )
                })
                .collect();
            if let Some(fp) = fingerprint::fingerprint(&bytes, a.size, |c| {
                known.get(&c).copied().unwrap_or(false)
            }) {
                t.watch.pending.insert(
                    k.addr,
                    Survivor {
                        stack: (a.ustack, a.pystack),
                        size: a.size,
                        ts_ns: a.ts_ns,
                        fp,
                    },
                );
            }
        }
    }

    /// After the free probes are gone: the fingerprinted allocations that were not freed
    /// meanwhile (still in the map, same entry) become survivors.
    fn harvest(&mut self, i: usize) {
        let pid = self.targets[i].pid;
        let left: HashMap<u64, u64> = self
            .probes
            .take_allocs(pid)
            .into_iter()
            .map(|(k, a)| (k.addr, a.ts_ns))
            .collect();
        let t = &mut self.targets[i];
        for (addr, s) in t.watch.pending.drain() {
            if left.get(&addr) == Some(&s.ts_ns) {
                t.watch.survivors.insert(addr, s);
            }
        }
    }

    /// Closes every window (before the final report), waiting for the probes to go.
    pub fn close_windows(&mut self) {
        for g in 0..self.groups.len() {
            if let Window::Open(since) = self.groups[g].window {
                self.probes.release_allocator(self.groups[g].file, true);
                self.groups[g].window = Window::Closing(since);
            }
            while matches!(
                self.groups[g].window,
                Window::Closing(_) | Window::Freeing(_)
            ) {
                if self.close_step(g).is_none() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Drops the survivors whose block no longer holds what was fingerprinted.
    pub(super) fn verify_survivors(&mut self, i: usize) {
        let t = &mut self.targets[i];
        let pid = t.pid;
        t.watch.survivors.retain(|addr, s| {
            match fingerprint::read_words(&mem::Process(pid), *addr, s.fp.n) {
                Some(now) => fingerprint::alive(&s.fp, &now),
                None => false, // unmapped
            }
        });
    }
}

/// Is `addr` a Python type object (its own type is `type`, or a metaclass whose type is)?
fn is_type_object(
    pid: u32,
    ob_type: u64,
    type_type: Option<u64>,
    cache: &mut HashMap<u64, bool>,
    addr: u64,
) -> bool {
    let Some(tt) = type_type else { return false };
    if addr < 0x1000 {
        return false;
    }
    if let Some(v) = cache.get(&addr) {
        return *v;
    }
    let ty = |a: u64| mem::Process(pid).u64(a + ob_type);
    let v = match ty(addr) {
        Some(m) if m == tt => true,
        Some(m) if m > 0x1000 => ty(m) == Some(tt),
        _ => false,
    };
    if cache.len() < 100_000 {
        cache.insert(addr, v);
    }
    v
}
