//! Loading the kernel programs and attaching them. Links are owned by the loaded object: dropping
//! it (or the tracer dying, even by SIGKILL) detaches everything, because aya links are fd-bound.
//!
//! By concern: `uprobes` (the interpreter's allocator probes, attached and released by file),
//! `libc` (exact mode's probes on a process's C library malloc family, and how many processes
//! get them), `sampler` (the on-CPU stack sampler), `targets` (the traced processes and what the
//! kernel needs to walk their Python frames), `allocs` (the outstanding allocations map),
//! `syscalls` (what the syscall hooks record: descriptors, execs, heap growth, forks), `stacks`
//! (the kernel's stack maps).

mod allocs;
mod libc_malloc;
mod sampler;
mod stacks;
mod syscalls;
mod targets;
mod uprobes;

use std::collections::HashMap;
use std::path::Path;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap};
use aya::programs::uprobe::UProbeLinkId;
use aya::programs::{RawTracePoint, UProbe};
use aya::{Ebpf, EbpfLoader};
use tracer_common::{stat, PidStats};

use crate::batch;
use crate::error::{one_line, Error, Result};
use crate::say;
use libc_malloc::{LibcProbes, LIBC_PROGRAMS};
pub use stacks::StackKeyRef;
pub use uprobes::watch_hooks;
use uprobes::{
    CONSTRUCTOR_PROGRAM, DICT_ITEMS_PROGRAM, ENTRY_PROGRAMS, EXIT_PROGRAM, FLOOR_PROGRAMS,
    FREE_KEYS_PROGRAMS, KEYS_PROGRAM, RECYCLE_PROGRAM,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("TRACER_EBPF_OBJECT"));

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
    /// The on-CPU stack sampler runs.
    sampler_running: bool,
    /// Exact mode's C library probes: which processes have them.
    libc: LibcProbes,
    /// Stacks nothing referred to at the last `collect_stacks` (native ids, Python keys).
    unused_stacks: (
        std::collections::HashSet<u32>,
        std::collections::HashSet<u64>,
    ),
}

impl Probes {
    /// Loads the BPF object and the descriptor tracker (raw tracepoint sys_exit), and attaches
    /// it. The uprobe programs are verified by the kernel on their first attach (`attach_at`):
    /// watch mode without windows attaches none, and verifying them all took two thirds of the
    /// kernel's work of starting a recording.
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
        // Every uprobe program is in the object (a build that lost one fails here, not at its
        // first window).
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
            .chain(LIBC_PROGRAMS.iter().map(|(_, p)| p))
        {
            let _: &mut UProbe = ebpf
                .program_mut(name)
                .ok_or_else(|| Error::Other(format!("program {name} missing from the BPF object")))?
                .try_into()
                .map_err(load_error)?;
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
            sampler_running: false,
            libc: LibcProbes::default(),
            unused_stacks: Default::default(),
        })
    }

    /// Prints what the kernel programs logged since the last call.
    pub fn flush_log(&mut self) {
        if let Some(l) = self.logger.as_mut() {
            l.flush();
        }
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
