//! Loading the kernel programs and attaching them. Links are owned by the loaded object: dropping
//! it (or the tracer dying, even by SIGKILL) detaches everything, because aya links are fd-bound.

use std::collections::HashMap;
use std::path::Path;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, StackTraceMap};
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use aya::programs::{PerfEvent, RawTracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use tracer_common::{
    stat, AllocInfo, AllocKey, FdInfo, FdKey, ForkInfo, ForkKey, Grow, GrowKey, MapInfo, MapKey,
    PidStats, PyConf, PyStack, SampleKey, ALLOC_FREE_LISTED, TARGET_FOLLOW_FORKS,
    TARGET_HOST_PIDNS, TARGET_SAMPLED, TARGET_TRACED,
};

use crate::batch;
use crate::error::{one_line, Error, Result};
use crate::python::allocator::{Domain, Hook};
use crate::python::{AllocOp, Interpreter};
use crate::say;

static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("TRACER_EBPF_OBJECT"));

const ENTRY_PROGRAMS: [&str; 4] = [
    "malloc_enter",
    "calloc_enter",
    "realloc_enter",
    "free_enter",
];
const EXIT_PROGRAM: &str = "alloc_exit";
const FLOOR_PROGRAMS: [&str; 2] = ["noop_enter", "noop_exit"];
/// `_Py_NewReference`: a recycled object's block takes the stack that created it again.
const RECYCLE_PROGRAM: &str = "new_reference";
/// Return of `new_keys_object`: the same for a dict's keys table from the keys free list.
const KEYS_PROGRAM: &str = "new_keys_exit";
/// 3.8: return of the constructors that use free lists (`_Py_NewReference` is inlined).
const CONSTRUCTOR_PROGRAM: &str = "new_object_exit";
/// 3.13: return of `_PyDict_FromItems` (its dict's keys table).
const DICT_ITEMS_PROGRAM: &str = "dict_items_exit";
/// libc's malloc family, by symbol (exact mode: native allocations).
const LIBC_PROGRAMS: [(&str, &str); 6] = [
    ("malloc", "libc_malloc_enter"),
    ("calloc", "libc_calloc_enter"),
    ("realloc", "libc_realloc_enter"),
    ("aligned_alloc", "libc_aligned_enter"),
    ("memalign", "libc_aligned_enter"),
    ("free", "libc_free_enter"),
];
/// The on-CPU stack sampler (a perf event per CPU).
const SAMPLE_PROGRAM: &str = "python_sample";
/// Its rate, per CPU (a prime: no lockstep with periodic work).
const SAMPLE_HZ: u64 = 997;

/// `free_keys_object`, by the index of its keys argument: marks a keys table free-listed.
const FREE_KEYS_PROGRAMS: [&str; 2] = ["free_keys_arg0", "free_keys_arg1"];

fn entry_program(op: AllocOp) -> &'static str {
    match op {
        AllocOp::Malloc => "malloc_enter",
        AllocOp::Calloc => "calloc_enter",
        AllocOp::Realloc => "realloc_enter",
        AllocOp::Free => "free_enter",
    }
}

/// Checks what the kernel must offer, with a precise message when it does not.
pub fn check_kernel() -> Result<()> {
    if !Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
        return Err(Error::KernelFeature(
            "no uprobe support (/sys/bus/event_source/devices/uprobe is missing; needs CONFIG_UPROBE_EVENTS)".into(),
        ));
    }
    Ok(())
}

/// A failure the kernel may not repeat (EAGAIN).
fn transient(msg: &str) -> bool {
    msg.contains("os error 11")
        || msg.contains("Resource temporarily unavailable")
        || msg.contains("EAGAIN")
}

fn load_error(e: impl std::fmt::Display) -> Error {
    let mut msg = one_line(&e.to_string());
    if transient(&msg) {
        return Error::Other(format!(
            "the kernel refused to load tracer's programs for now ({msg}): try again in a moment"
        ));
    }
    // Keep the verifier's conclusion (its last words), not its whole log.
    if let Some(i) = msg.find("Verifier output:") {
        let tail: String = msg[i..]
            .chars()
            .rev()
            .take(300)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        msg = format!("{} ... {}", &msg[..i], tail);
    }
    if msg.contains("Operation not permitted") || msg.contains("EPERM") {
        Error::NotPrivileged
    } else {
        Error::KernelFeature(format!("loading the BPF programs failed: {msg}"))
    }
}

/// An interpreter file: device and inode.
pub type FileId = (u64, u64);

pub struct Probes {
    ebpf: Ebpf,
    logger: Option<aya_log::EbpfLogger<KernelLog>>,
    /// Allocator probes by interpreter file.
    links: HashMap<FileId, Vec<(&'static str, UProbeLinkId)>>,
    /// Threads dropping detached links (see `release_allocator`).
    releasing: HashMap<FileId, Vec<std::thread::JoinHandle<()>>>,
    /// Benchmark floor: attach do-nothing programs instead of the allocator probes.
    pub floor: bool,
    /// Probe `_Py_NewReference` with the allocator in exact mode (see `attach_recycle`).
    pub recycle: bool,
    /// The on-CPU sampler runs.
    sampling: bool,
    /// Stacks nothing referred to at the last `collect_stacks` (native ids, Python keys).
    unused_stacks: (
        std::collections::HashSet<u32>,
        std::collections::HashSet<u64>,
    ),
}

/// A stack's two keys: the native stack id and the Python stack key.
pub type StackKeyRef = (i32, u64);

impl Probes {
    /// Loads every program and attaches the descriptor tracker (raw tracepoint sys_exit).
    pub fn load() -> Result<Probes> {
        check_kernel()?;
        // EAGAIN is the kernel's "not now" (memory pressure, the verifier interrupted): tried
        // again before it is taken for a kernel that cannot run tracer.
        let mut tries = 0;
        let mut ebpf = loop {
            match EbpfLoader::new().load(OBJECT) {
                Ok(e) => break e,
                Err(e) if transient(&e.to_string()) && tries < 4 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(250 * tries));
                }
                Err(e) => return Err(load_error(e)),
            }
        };
        let logger = aya_log::EbpfLogger::init_with_logger(&mut ebpf, KernelLog).ok();
        for name in ENTRY_PROGRAMS
            .iter()
            .chain([
                &EXIT_PROGRAM,
                &RECYCLE_PROGRAM,
                &KEYS_PROGRAM,
                &CONSTRUCTOR_PROGRAM,
                &DICT_ITEMS_PROGRAM,
            ])
            .chain(FREE_KEYS_PROGRAMS.iter())
            .chain(FLOOR_PROGRAMS.iter())
            .chain(
                LIBC_PROGRAMS
                    .iter()
                    .map(|(_, p)| p)
                    .filter(|p| **p != "libc_aligned_enter"),
            )
            .chain(["libc_aligned_enter"].iter())
        {
            let p: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| Error::Other(format!("program {name} missing from the BPF object")))?
                .try_into()
                .map_err(load_error)?;
            p.load().map_err(load_error)?;
        }
        let tp: &mut RawTracePoint = ebpf
            .program_mut("sys_exit")
            .ok_or_else(|| Error::Other("program sys_exit missing from the BPF object".into()))?
            .try_into()
            .map_err(load_error)?;
        tp.load().map_err(load_error)?;
        tp.attach("sys_exit").map_err(|e| {
            Error::KernelFeature(format!(
                "cannot attach the raw tracepoint sys_exit: {}",
                one_line(&e.to_string())
            ))
        })?;
        Ok(Probes {
            ebpf,
            logger,
            links: HashMap::new(),
            releasing: HashMap::new(),
            floor: false,
            recycle: true,
            sampling: false,
            unused_stacks: Default::default(),
        })
    }

    /// Starts tracing a process: its descriptors at once, and its allocations wherever the
    /// allocator probes of its interpreter file are attached (they filter by pid in the kernel).
    /// With `follow`, the processes it forks enter the map as they are made (see
    /// `TARGET_FOLLOW_FORKS`).
    pub fn add_target(&mut self, pid: u32, follow: bool) -> Result<()> {
        self.set_target_flags(pid, TARGET_TRACED | follow_flags(pid, follow))
    }

    /// Follows a process for the processes it starts, without tracing it (a shell, or another
    /// program between a launched command and its Pythons).
    pub fn follow_only(&mut self, pid: u32) -> Result<()> {
        self.set_target_flags(pid, follow_flags(pid, true))
    }

    fn set_target_flags(&mut self, pid: u32, flags: u32) -> Result<()> {
        let mut targets: BpfHashMap<&mut MapData, u32, u32> =
            BpfHashMap::try_from(self.ebpf.map_mut("TARGETS").expect("TARGETS map"))
                .map_err(load_error)?;
        targets.insert(pid, flags, 0).map_err(|e| {
            Error::Other(format!(
                "cannot add pid {pid} to the target map: {}",
                one_line(&e.to_string())
            ))
        })
    }

    /// Has the on-CPU sampler record (or stop recording) a traced process's Python stacks.
    /// The sampler's perf events are opened the first time a process asks; an error says why
    /// it cannot run (then stacks are sampled from outside only).
    pub fn set_sampled(&mut self, pid: u32, on: bool) -> Result<()> {
        if on && !self.sampling {
            self.start_sampler()?;
        }
        let Some(m) = self.ebpf.map_mut("TARGETS") else {
            return Ok(());
        };
        let mut t = BpfHashMap::<&mut MapData, u32, u32>::try_from(m).map_err(load_error)?;
        if let Ok(flags) = t.get(&pid, 0) {
            let flags = if on {
                flags | TARGET_SAMPLED
            } else {
                flags & !TARGET_SAMPLED
            };
            let _ = t.insert(pid, flags, 0);
        }
        Ok(())
    }

    /// Where each traced process's heap grew since it was attached, by stack, and the mappings
    /// it made that are still there (with the stacks that made them).
    pub fn growth(&self) -> (HashMap<GrowKey, Grow>, HashMap<MapKey, MapInfo>) {
        (
            read_hash(self.ebpf.map("GROWS")),
            read_hash(self.ebpf.map("MAPPINGS")),
        )
    }

    /// Tells the kernel where a process's program break is now (its heap's growth is counted
    /// from there).
    pub fn seed_break(&mut self, pid: u32, brk: u64) {
        if let Some(m) = self.ebpf.map_mut("BREAKS") {
            if let Ok(mut t) = BpfHashMap::<&mut MapData, u32, u64>::try_from(m) {
                let _ = t.insert(pid, brk, 0);
            }
        }
    }

    /// Takes the processes traced ones forked since the last call, oldest first.
    pub fn take_forks(&mut self) -> Vec<(ForkKey, ForkInfo)> {
        let all: HashMap<ForkKey, ForkInfo> = read_hash(self.ebpf.map("FORKS"));
        let keys: Vec<ForkKey> = all.keys().copied().collect();
        if !keys.is_empty() {
            batch::delete::<ForkKey, ForkInfo>(self.ebpf.map_mut("FORKS"), &keys);
        }
        let mut v: Vec<(ForkKey, ForkInfo)> = all.into_iter().collect();
        v.sort_by_key(|(_, i)| i.ts_ns);
        v
    }

    fn start_sampler(&mut self) -> Result<()> {
        let p: &mut PerfEvent = self
            .ebpf
            .program_mut(SAMPLE_PROGRAM)
            .ok_or_else(|| Error::Other(format!("program {SAMPLE_PROGRAM} missing")))?
            .try_into()
            .map_err(load_error)?;
        p.load().map_err(load_error)?;
        let cpus = aya::util::online_cpus()
            .map_err(|(what, e)| Error::KernelFeature(format!("{what}: {e}")))?;
        for cpu in cpus {
            p.attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(SAMPLE_HZ),
                false,
            )
            .map_err(|e| {
                Error::KernelFeature(format!(
                    "cannot open the CPU clock's perf event on cpu {cpu}: {}",
                    one_line(&e.to_string())
                ))
            })?;
        }
        self.sampling = true;
        Ok(())
    }

    /// Takes every on-CPU sample recorded since the last call, by process: (Python stack key,
    /// count). The map is emptied (the samples of a process that is gone with it).
    pub fn take_samples(&mut self) -> HashMap<u32, Vec<(u64, u64)>> {
        let all: HashMap<SampleKey, u64> = read_hash(self.ebpf.map("SAMPLES"));
        let keys: Vec<SampleKey> = all.keys().copied().collect();
        if !keys.is_empty() {
            batch::delete::<SampleKey, u64>(self.ebpf.map_mut("SAMPLES"), &keys);
        }
        let mut out: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
        for (k, n) in all {
            out.entry(k.pid).or_default().push((k.stack, n));
        }
        out
    }

    /// Attaches allocator probes (`hooks`, a subset of the interpreter's) to one interpreter
    /// file, for every process that maps it: one probe per file however many processes share
    /// it, the programs keep the traced pids only. Returns the number of probes.
    pub fn attach_allocator(&mut self, interp: &Interpreter, hooks: &[Hook]) -> Result<usize> {
        let file = interp.file_id;
        let mut links = Vec::new();
        for hook in hooks {
            let (entry, exit) = if self.floor {
                (FLOOR_PROGRAMS[0], FLOOR_PROGRAMS[1])
            } else {
                (entry_program(hook.op), EXIT_PROGRAM)
            };
            let mut programs = vec![entry];
            if hook.op != AllocOp::Free {
                programs.push(exit);
            }
            for name in programs {
                match self.attach_uprobe(name, hook, interp) {
                    Ok(id) => links.push((name, id)),
                    Err(e) => {
                        // Leave nothing half-attached.
                        self.links.entry(file).or_default().extend(links);
                        self.detach_allocator(file);
                        return Err(e);
                    }
                }
            }
        }
        let n = links.len();
        self.links.entry(file).or_default().extend(links);
        Ok(n)
    }

    /// Attaches probes to libc's malloc family in `path` (the C library a target maps, as the
    /// target sees it) for process `pid` only, keyed as one more file (`file`): exact mode's
    /// native allocations. Returns the number of probes.
    pub fn attach_libc(&mut self, path: &Path, file: FileId, pid: u32) -> Result<usize> {
        let Some(scope) = std::num::NonZeroU32::new(pid).map(UProbeScope::OneProcess) else {
            return Ok(0);
        };
        if self.links.contains_key(&file) {
            return Ok(0);
        }
        let elf = crate::python::elf::Elf::open(path)
            .map_err(|e| Error::Other(format!("cannot read {}: {e}", path.display())))?;
        let mut links = Vec::new();
        for (symbol, program) in LIBC_PROGRAMS {
            let Some(off) = elf.dynsym(symbol).and_then(|s| elf.vaddr_to_offset(s.addr)) else {
                continue;
            };
            let mut names = vec![program];
            if symbol != "free" {
                names.push(EXIT_PROGRAM);
            }
            for name in names {
                match self.attach_at(name, off, path, scope, &format!(" ({symbol})")) {
                    Ok(id) => links.push((name, id)),
                    Err(e) => {
                        // Leave nothing half-attached.
                        self.links.insert(file, links);
                        self.detach_allocator(file);
                        return Err(e);
                    }
                }
            }
        }
        let n = links.len();
        self.links.insert(file, links);
        Ok(n)
    }

    /// Attaches the `_Py_NewReference` probe to an interpreter file (with its allocator probes,
    /// released with them): an object that a free list hands out again gives its outstanding
    /// block the stack and time of the code that created it, instead of the first allocator's.
    /// On 3.8 (a header inline there) the return probes of the constructors that pop free
    /// lists do it. With .symtab, the return of `new_keys_object` does the same for a dict's
    /// keys table, and `free_keys_object` marks a table free-listed. Returns the number of probes: 0 when the build inlines the function
    /// (`allocator::NEW_REFERENCE_INLINED`), when `recycle` is off (benchmark) or the floor is
    /// measured.
    pub fn attach_recycle(&mut self, interp: &Interpreter) -> Result<usize> {
        if self.floor || !self.recycle {
            return Ok(0);
        }
        let mut todo = Vec::new();
        if let Some(hook) = interp.alloc.new_reference.as_ref() {
            todo.push((RECYCLE_PROGRAM, hook));
        }
        for hook in &interp.alloc.constructors {
            todo.push((CONSTRUCTOR_PROGRAM, hook));
        }
        if todo.is_empty() {
            return Ok(0);
        }
        if let Some(keys) = interp.alloc.new_keys.as_ref() {
            todo.push((KEYS_PROGRAM, keys));
            if let Some((free, arg)) = interp.alloc.free_keys.as_ref() {
                todo.push((FREE_KEYS_PROGRAMS[*arg as usize], free));
            }
            if let Some(items) = interp.alloc.dict_from_items.as_ref() {
                todo.push((DICT_ITEMS_PROGRAM, items));
            }
        }
        let n = todo.len();
        for (name, hook) in todo {
            let id = self.attach_uprobe(name, hook, interp)?;
            self.links
                .entry(interp.file_id)
                .or_default()
                .push((name, id));
        }
        Ok(n)
    }

    /// Attaches the program `name` at `hook`'s place in the interpreter file, for every process
    /// that maps it (the programs filter by pid).
    fn attach_uprobe(
        &mut self,
        name: &'static str,
        hook: &Hook,
        interp: &Interpreter,
    ) -> Result<UProbeLinkId> {
        self.attach_at(
            name,
            hook.file_offset,
            &interp.open_path,
            UProbeScope::AllProcesses,
            &format!(" at {:#x} ({})", hook.file_offset, hook.name),
        )
    }

    /// Attaches the program `name` at file offset `offset` of `path` for `scope`; `place` says
    /// where in an error (after the path).
    fn attach_at(
        &mut self,
        name: &'static str,
        offset: u64,
        path: &Path,
        scope: UProbeScope,
        place: &str,
    ) -> Result<UProbeLinkId> {
        let p: &mut UProbe = self
            .ebpf
            .program_mut(name)
            .expect("loaded")
            .try_into()
            .map_err(load_error)?;
        p.attach(UProbeAttachLocation::AbsoluteOffset(offset), path, scope)
            .map_err(|e| {
                Error::Other(format!(
                    "cannot attach a uprobe to {}{place}: {}",
                    path.display(),
                    one_line(&e.to_string())
                ))
            })
    }

    /// Detaches the allocator probes of an interpreter file, at once.
    pub fn detach_allocator(&mut self, file: FileId) {
        for (name, id) in self.links.remove(&file).unwrap_or_default() {
            if let Some(p) = self.ebpf.program_mut(name) {
                let p: std::result::Result<&mut UProbe, _> = p.try_into();
                if let Ok(p) = p {
                    let _ = p.detach(id);
                }
            }
        }
    }

    /// Detaches the allocator probes of an interpreter file off the caller's thread;
    /// `released(file)` tells when
    /// they are all gone. With `keep_frees`, the free probes stay attached (a watch window reads
    /// what it saw while frees are still removed from the map; see `Collector::windows`).
    ///
    /// The kernel removes one perf uprobe at a time (each waits for an RCU grace period under a
    /// global mutex, ~100 ms here), and a probe traps until its turn: entry probes go first, so
    /// that nothing new is recorded, then the return probes that complete what they started,
    /// then the free probes, which keep removing what dies meanwhile.
    pub fn release_allocator(&mut self, file: FileId, keep_frees: bool) {
        let mut links: Vec<(u8, aya::programs::uprobe::UProbeLink)> = Vec::new();
        let mut kept = Vec::new();
        for (name, id) in self.links.remove(&file).unwrap_or_default() {
            let rank = match name {
                "alloc_exit" | "noop_exit" | KEYS_PROGRAM | CONSTRUCTOR_PROGRAM
                | DICT_ITEMS_PROGRAM => 1,
                "free_enter" | "libc_free_enter" | "free_keys_arg0" | "free_keys_arg1" => 2,
                _ => 0,
            };
            if keep_frees && rank == 2 {
                kept.push((name, id));
                continue;
            }
            if let Some(p) = self.ebpf.program_mut(name) {
                let p: std::result::Result<&mut UProbe, _> = p.try_into();
                if let Ok(p) = p {
                    if let Ok(link) = p.take_link(id) {
                        links.push((rank, link));
                    }
                }
            }
        }
        if !kept.is_empty() {
            self.links.insert(file, kept);
        }
        links.sort_by_key(|(r, _)| *r);
        let h = std::thread::spawn(move || {
            for (_, l) in links {
                drop(l);
            }
        });
        self.releasing.entry(file).or_default().push(h);
    }

    /// Starts releasing every allocator probe (see `release_allocator`: nothing new is
    /// recorded from the first step on, frees are followed to the last). Removing a probe costs
    /// the kernel grace periods, one probe at a time: at exit this overlaps the final reading
    /// and the reports instead of following them.
    pub fn release_all(&mut self) {
        let files: Vec<FileId> = self.links.keys().copied().collect();
        for f in files {
            self.release_allocator(f, false);
        }
    }

    /// Are the probes that `release_allocator` let go of gone?
    pub fn released(&mut self, file: FileId) -> bool {
        let Some(hs) = self.releasing.get(&file) else {
            return true;
        };
        if hs.iter().any(|h| !h.is_finished()) {
            return false;
        }
        for h in self.releasing.remove(&file).unwrap_or_default() {
            let _ = h.join();
        }
        true
    }

    /// Waits until every released probe is gone (before exiting).
    pub fn settle(&mut self) {
        for h in self.releasing.drain().flat_map(|(_, hs)| hs) {
            let _ = h.join();
        }
    }

    /// Removes and returns a process's outstanding allocations.
    pub fn take_allocs(&mut self, pid: u32) -> Vec<(AllocKey, AllocInfo)> {
        let mut mine = Vec::new();
        self.for_each_entry(|k, v| {
            if k.pid == pid {
                mine.push((*k, *v));
            }
        });
        let keys: Vec<AllocKey> = mine.iter().map(|(k, _)| *k).collect();
        self.delete_allocs(&keys);
        mine.retain(|(_, v)| v.flags & ALLOC_FREE_LISTED == 0);
        mine
    }

    /// Removes a process's allocations that `drop` selects (only their keys are held, in
    /// one walk of the map), and returns how many.
    fn drop_allocs_where(&mut self, pid: u32, drop: impl Fn(&AllocInfo) -> bool) -> usize {
        let mut keys = Vec::new();
        self.for_each_entry(|k, v| {
            if k.pid == pid && drop(v) {
                keys.push(*k);
            }
        });
        self.delete_allocs(&keys);
        keys.len()
    }

    fn delete_allocs(&mut self, keys: &[AllocKey]) {
        if !keys.is_empty() {
            batch::delete::<AllocKey, AllocInfo>(self.ebpf.map_mut("ALLOCS"), keys);
        }
    }

    /// Stops tracing a process and forgets its entries.
    pub fn remove_target(&mut self, pid: u32) {
        self.remove_targets(&[pid]);
    }

    /// Stops tracing processes and forgets their entries, with one walk of each map whatever
    /// their number (processes that end by the dozen each second must not cost a walk each).
    pub fn remove_targets(&mut self, pids: &[u32]) {
        if pids.is_empty() {
            return;
        }
        if let Some(m) = self.ebpf.map_mut("TARGETS") {
            if let Ok(mut t) = BpfHashMap::<&mut MapData, u32, u32>::try_from(m) {
                for pid in pids {
                    let _ = t.remove(pid);
                }
            }
        }
        for &pid in pids {
            self.remove_pyconf(pid);
            self.forget_exec(pid);
        }
        // Counters of these processes are not the next ones' with their pids.
        if let Some(m) = self.ebpf.map_mut("PID_STATS") {
            if let Ok(mut t) = PerCpuHashMap::<&mut MapData, u32, PidStats>::try_from(m) {
                for pid in pids {
                    let _ = t.remove(pid);
                }
            }
        }
        let gone: std::collections::HashSet<u32> = pids.iter().copied().collect();
        let mut keys = Vec::new();
        self.for_each_entry(|k, _| {
            if gone.contains(&k.pid) {
                keys.push(*k);
            }
        });
        self.delete_allocs(&keys);
        let fds: Vec<FdKey> = self
            .fds()
            .into_keys()
            .filter(|k| gone.contains(&k.pid))
            .collect();
        if !fds.is_empty() {
            batch::delete::<FdKey, FdInfo>(self.ebpf.map_mut("FDS"), &fds);
        }
        let (grows, maps) = self.growth();
        let grows: Vec<GrowKey> = grows
            .into_keys()
            .filter(|k| gone.contains(&k.pid))
            .collect();
        if !grows.is_empty() {
            batch::delete::<GrowKey, Grow>(self.ebpf.map_mut("GROWS"), &grows);
        }
        let maps: Vec<MapKey> = maps.into_keys().filter(|k| gone.contains(&k.pid)).collect();
        if !maps.is_empty() {
            batch::delete::<MapKey, MapInfo>(self.ebpf.map_mut("MAPPINGS"), &maps);
        }
        if let Some(m) = self.ebpf.map_mut("BREAKS") {
            if let Ok(mut t) = BpfHashMap::<&mut MapData, u32, u64>::try_from(m) {
                for pid in pids {
                    let _ = t.remove(pid);
                }
            }
        }
    }

    /// Stops walking a process's Python frames (its program was replaced).
    pub fn remove_pyconf(&mut self, pid: u32) {
        if let Some(m) = self.ebpf.map_mut("PYCONF") {
            if let Ok(mut t) = BpfHashMap::<&mut MapData, u32, PyConf>::try_from(m) {
                let _ = t.remove(&pid);
            }
        }
    }

    /// Tells the kernel how to walk a process's Python frames.
    pub fn set_pyconf(&mut self, pid: u32, conf: PyConf) -> Result<()> {
        let m = self.ebpf.map_mut("PYCONF").expect("PYCONF map");
        let mut t = BpfHashMap::<&mut MapData, u32, PyConf>::try_from(m).map_err(load_error)?;
        t.insert(pid, conf, 0).map_err(|e| {
            Error::Other(format!(
                "cannot configure Python stacks for pid {pid}: {}",
                one_line(&e.to_string())
            ))
        })
    }

    /// Makes the kernel's thread map for `pid` exactly `now` (tid -> PyThreadState), including
    /// entries the kernel added itself for threads that are gone since.
    pub fn set_threads(&mut self, pid: u32, now: &HashMap<u32, u64>) {
        let Some(m) = self.ebpf.map_mut("THREADS") else {
            return;
        };
        let Ok(mut t) = BpfHashMap::<&mut MapData, u64, u64>::try_from(m) else {
            return;
        };
        let key = |tid: u32| ((pid as u64) << 32) | tid as u64;
        let existing: Vec<(u64, u64)> = t
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(k, _)| (k >> 32) as u32 == pid)
            .collect();
        for (k, v) in &existing {
            if now.get(&(*k as u32)) != Some(v) {
                let _ = t.remove(k);
            }
        }
        for (tid, tstate) in now {
            if !existing.contains(&(key(*tid), *tstate)) {
                let _ = t.insert(key(*tid), *tstate, 0);
            }
        }
    }

    /// A Python stack recorded by the kernel.
    pub fn pystack(&self, key: u64) -> Option<PyStack> {
        if key == 0 {
            return None;
        }
        ["PYSTACKS", "FD_PYSTACKS"].into_iter().find_map(|name| {
            let m = self.ebpf.map(name)?;
            let t = BpfHashMap::<&MapData, u64, PyStack>::try_from(m).ok()?;
            t.get(&key, 0).ok()
        })
    }

    /// Frees the stacks nothing refers to any more from the kernel's stack maps, which are never
    /// emptied by the kernel programs: a long exact-mode recording (or a few interpreters
    /// starting) fills them with the stacks of allocations long freed, and every stack after
    /// that is lost. `used` are the stacks the user side still holds (its samples); the
    /// allocation, descriptor and in-flight maps are read here. A stack is freed once unused at
    /// two calls in a row (an event records its stack before the entry that refers to it).
    pub fn collect_stacks(
        &mut self,
        used: impl Iterator<Item = StackKeyRef>,
        force: bool,
    ) -> (usize, usize) {
        // Only when the maps fill up (an entry freed while an event takes it again loses that
        // event's stack: rare, but not worth it while there is room).
        let python_keys = read_keys::<u64, PyStack>(self.ebpf.map("PYSTACKS")).len();
        if !force && python_keys < 65536 / 2 {
            self.unused_stacks = Default::default();
            return (0, 0);
        }
        let mut native: std::collections::HashSet<i32> = std::collections::HashSet::new();
        let mut python: std::collections::HashSet<u64> = std::collections::HashSet::new();
        for (u, p) in used {
            native.insert(u);
            python.insert(p);
        }
        self.for_each_entry(|_, a| {
            native.insert(a.ustack);
            python.insert(a.pystack);
        });
        for v in self.fds().values() {
            native.insert(v.ustack);
            python.insert(v.pystack);
        }
        for v in read_hash::<FdKey, FdInfo>(self.ebpf.map("EXEC_FDS")).values() {
            native.insert(v.ustack);
            python.insert(v.pystack);
        }
        for v in read_hash::<u64, tracer_common::PendingAlloc>(self.ebpf.map("PENDING")).values() {
            native.insert(v.ustack);
            python.insert(v.pystack);
        }
        for k in read_hash::<SampleKey, u64>(self.ebpf.map("SAMPLES")).keys() {
            python.insert(k.stack);
        }
        let (grows, maps) = self.growth();
        for k in grows.keys() {
            native.insert(k.ustack);
            python.insert(k.pystack);
        }
        for v in maps.values() {
            native.insert(v.ustack);
            python.insert(v.pystack);
        }
        let (old_native, old_python) = std::mem::take(&mut self.unused_stacks);
        let mut freed = (0, 0);
        let mut unused_native = std::collections::HashSet::new();
        if let Some(m) = self.ebpf.map_mut("STACKS") {
            if let Ok(mut st) = StackTraceMap::try_from(m) {
                let ids: Vec<u32> = st.stack_ids().filter_map(|r| r.ok()).collect();
                for id in ids {
                    if native.contains(&(id as i32)) {
                        continue;
                    }
                    if old_native.contains(&id) {
                        if st.remove(&id).is_ok() {
                            freed.0 += 1;
                        }
                    } else {
                        unused_native.insert(id);
                    }
                }
            }
        }
        let mut unused_python = std::collections::HashSet::new();
        for name in ["PYSTACKS", "FD_PYSTACKS"] {
            let mut doomed = Vec::new();
            for k in read_keys::<u64, PyStack>(self.ebpf.map(name)) {
                if python.contains(&k) {
                    continue;
                }
                if old_python.contains(&k) {
                    doomed.push(k);
                } else {
                    unused_python.insert(k);
                }
            }
            if !doomed.is_empty() {
                freed.1 += doomed.len();
                batch::delete::<u64, PyStack>(self.ebpf.map_mut(name), &doomed);
            }
        }
        self.unused_stacks = (unused_native, unused_python);
        freed
    }

    /// Prints what the kernel programs logged since the last call.
    pub fn flush_log(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
    }

    /// Removes a process's allocations made before `before_ns` (its heap was replaced by exec).
    pub fn purge_allocs(&mut self, pid: u32, before_ns: u64) -> usize {
        self.drop_allocs_where(pid, |v| v.ts_ns < before_ns)
    }

    /// Calls `f` with every outstanding allocation, read in batches (nothing is kept: a
    /// million entries would weigh ~100 MB in a hash map); returns the number of entries.
    /// Blocks in a free list (`ALLOC_FREE_LISTED`) are not outstanding: skipped.
    pub fn for_each_alloc(&self, mut f: impl FnMut(&AllocKey, &AllocInfo)) -> u64 {
        let mut n = 0;
        self.for_each_entry(|k, v| {
            if v.flags & ALLOC_FREE_LISTED == 0 {
                n += 1;
                f(k, v);
            }
        });
        n
    }

    /// Every entry of the allocation map, free-listed blocks included.
    fn for_each_entry(&self, f: impl FnMut(&AllocKey, &AllocInfo)) -> u64 {
        batch::for_each(self.ebpf.map("ALLOCS"), f)
    }

    pub fn fds(&self) -> HashMap<FdKey, FdInfo> {
        read_hash(self.ebpf.map("FDS"))
    }

    /// The descriptors of `pid` that were open at its last exec, by number: the kernel's entries
    /// older than the exec, and the ones the new program closed or reused since (which the
    /// kernel kept aside). The kernel stops keeping them aside for this exec.
    pub fn take_exec_fds(&mut self, pid: u32, exec_ns: u64) -> HashMap<u32, FdInfo> {
        let mut out: HashMap<u32, FdInfo> = self
            .fds()
            .into_iter()
            .filter(|(k, v)| k.pid == pid && v.ts_ns < exec_ns)
            .map(|(k, v)| (k.fd, v))
            .collect();
        let kept: HashMap<FdKey, FdInfo> = read_hash(self.ebpf.map("EXEC_FDS"));
        for (k, v) in &kept {
            if k.pid == pid && v.ts_ns < exec_ns {
                out.entry(k.fd).or_insert(*v);
            }
        }
        self.forget_exec(pid);
        out
    }

    /// Forgets a process's last exec and the descriptors kept aside for it.
    fn forget_exec(&mut self, pid: u32) {
        if let Some(m) = self.ebpf.map_mut("EXEC_NS") {
            if let Ok(mut t) = BpfHashMap::<&mut MapData, u32, u64>::try_from(m) {
                let _ = t.remove(&pid);
            }
        }
        let keys: Vec<FdKey> = read_hash::<FdKey, FdInfo>(self.ebpf.map("EXEC_FDS"))
            .into_keys()
            .filter(|k| k.pid == pid)
            .collect();
        if !keys.is_empty() {
            batch::delete::<FdKey, FdInfo>(self.ebpf.map_mut("EXEC_FDS"), &keys);
        }
    }

    /// Removes a descriptor entry; with `only_if_ts`, only when it is still the same entry.
    pub fn remove_fd(&mut self, key: &FdKey, only_if_ts: Option<u64>) {
        let Some(m) = self.ebpf.map_mut("FDS") else {
            return;
        };
        let Ok(mut t) = BpfHashMap::<&mut MapData, FdKey, FdInfo>::try_from(m) else {
            return;
        };
        if let Some(ts) = only_if_ts {
            match t.get(key, 0) {
                Ok(cur) if cur.ts_ns == ts => {}
                _ => return,
            }
        }
        let _ = t.remove(key);
    }

    /// The user stack for a stack id, leaf first.
    pub fn stack(&self, id: i32) -> Option<Vec<u64>> {
        if id < 0 {
            return None;
        }
        let m = StackTraceMap::try_from(self.ebpf.map("STACKS")?).ok()?;
        let st = m.get(&(id as u32), 0).ok()?;
        Some(st.frames().iter().map(|f| f.ip).collect())
    }

    /// Global counters, summed over CPUs.
    pub fn stats(&self) -> [u64; stat::COUNT as usize] {
        let mut out = [0u64; stat::COUNT as usize];
        if let Some(m) = self.ebpf.map("STATS") {
            if let Ok(a) = PerCpuArray::<&MapData, u64>::try_from(m) {
                for (i, slot) in out.iter_mut().enumerate() {
                    if let Ok(v) = a.get(&(i as u32), 0) {
                        *slot = v.iter().sum();
                    }
                }
            }
        }
        out
    }

    pub fn pid_stats(&self, pid: u32) -> PidStats {
        let mut s = PidStats::default();
        if let Some(m) = self.ebpf.map("PID_STATS") {
            if let Ok(h) = PerCpuHashMap::<&MapData, u32, PidStats>::try_from(m) {
                if let Ok(v) = h.get(&pid, 0) {
                    for c in v.iter() {
                        s.alloc_calls += c.alloc_calls;
                        s.free_calls += c.free_calls;
                        s.fd_opens += c.fd_opens;
                        s.fd_closes += c.fd_closes;
                        s.execs += c.execs;
                        s.last_exec_ns = s.last_exec_ns.max(c.last_exec_ns);
                    }
                }
            }
        }
        s
    }
}

/// The probes of a watch window: what the object domain (else the raw domain) allocates,
/// resizes and frees. Every probe costs the target a grace period to remove (see
/// `release_allocator`), so not calloc (rare) and not a second domain. Realloc stays: strings
/// built by formatting (`"%d" % i`, f-strings) get their final address from it.
pub fn watch_hooks(hooks: &[Hook]) -> Vec<Hook> {
    let mut out = Vec::new();
    for op in [AllocOp::Malloc, AllocOp::Realloc, AllocOp::Free] {
        let of_op: Vec<&Hook> = hooks.iter().filter(|h| h.op == op).collect();
        let pick = of_op
            .iter()
            .find(|h| h.domains.contains(&Domain::Obj))
            .or_else(|| of_op.iter().find(|h| h.domains.contains(&Domain::Mem)))
            .or_else(|| of_op.first());
        if let Some(h) = pick {
            out.push((*h).clone());
        }
    }
    out
}

/// The `TARGETS` flags that make the kernel follow a process's forks: only for a process in
/// tracer's own pid namespace, where the pid fork returns is the one the maps key (a container's
/// children are found by the scan of /proc instead).
fn follow_flags(pid: u32, follow: bool) -> u32 {
    if !follow {
        return 0;
    }
    let ns = |p: &str| {
        std::fs::metadata(p)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
    };
    let same = ns(&format!("/proc/{pid}/ns/pid")).is_some()
        && ns(&format!("/proc/{pid}/ns/pid")) == ns("/proc/self/ns/pid");
    if same {
        TARGET_FOLLOW_FORKS | TARGET_HOST_PIDNS
    } else {
        TARGET_FOLLOW_FORKS
    }
}

/// The keys of a hash map (its values left in the kernel).
fn read_keys<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
    map: Option<&aya::maps::Map>,
) -> Vec<K> {
    let Some(m) = map else {
        return Vec::new();
    };
    let Ok(h) = BpfHashMap::<&MapData, K, V>::try_from(m) else {
        return Vec::new();
    };
    h.keys().filter_map(|k| k.ok()).collect()
}

fn read_hash<K: aya::Pod + Eq + std::hash::Hash, V: aya::Pod>(
    map: Option<&aya::maps::Map>,
) -> HashMap<K, V> {
    let mut out = HashMap::new();
    batch::for_each(map, |k: &K, v: &V| {
        out.insert(*k, *v);
    });
    out
}

/// Kernel-side log records (aya-log), printed as tracer's own stderr lines.
pub struct KernelLog;

impl log::Log for KernelLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        say!("tracer: [kernel] {}", record.args());
    }
    fn flush(&self) {}
}
