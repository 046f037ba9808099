//! Collector: reads the kernel maps into per-process snapshots, reconciles descriptors with
//! /proc/PID/fd, notices targets that exit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracer_common::{FdInfo, FdKey, PidStats};

use crate::probes::Probes;
use crate::procfs;
use crate::python::Interpreter;
use crate::symbolize::Symbolizer;

/// A traced process.
pub struct Target {
    pub pid: u32,
    pub comm: String,
    pub interp: Interpreter,
    pub attached_at: Instant,
    /// utime+stime (ticks) when tracing started.
    pub cpu_ticks_at_start: u64,
    pub cpu_ticks_last: u64,
    pub exited_after: Option<Duration>,
    /// The last snapshot taken while the process was alive.
    pub last: Option<ProcSnapshot>,
    pub uprobes: usize,
    /// Allocations before this time were voided by an exec and purged.
    pub purged_before_ns: u64,
}

/// Stack key: native stack id and Python stack id.
pub type StackKey = (i32, i32);

#[derive(Debug, Clone, Copy, Default)]
pub struct AllocGroup {
    pub bytes: u64,
    pub count: u64,
    pub oldest_ts: u64,
}

#[derive(Debug, Clone)]
pub struct OpenFd {
    pub fd: u32,
    pub info: FdInfo,
    /// readlink of /proc/PID/fd/N when it was read.
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ProcSnapshot {
    pub allocs: HashMap<StackKey, AllocGroup>,
    pub fds: Vec<OpenFd>,
    pub stats: PidStats,
    /// Native frames of every stack in this snapshot, root first (symbolized while alive).
    pub frames: HashMap<i32, Vec<String>>,
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub struct Collector {
    pub probes: Probes,
    pub targets: Vec<Target>,
    pub symbolizer: Symbolizer,
    pub min_age: Duration,
}

impl Collector {
    pub fn new(probes: Probes, min_age: Duration) -> Collector {
        Collector {
            probes,
            targets: Vec::new(),
            symbolizer: Symbolizer::default(),
            min_age,
        }
    }

    pub fn add(&mut self, pid: u32, interp: Interpreter) -> crate::error::Result<()> {
        let uprobes = self.probes.add_target(pid, &interp)?;
        let ticks = procfs::stat(pid).map(|s| s.cpu_ticks).unwrap_or(0);
        self.targets.push(Target {
            pid,
            comm: procfs::comm(pid),
            interp,
            attached_at: Instant::now(),
            cpu_ticks_at_start: ticks,
            cpu_ticks_last: ticks,
            exited_after: None,
            last: None,
            uprobes,
            purged_before_ns: 0,
        });
        Ok(())
    }

    pub fn all_exited(&self) -> bool {
        self.targets.iter().all(|t| t.exited_after.is_some())
    }

    /// Takes a snapshot of every live target, and retires targets that have exited (keeping their
    /// last snapshot). Returns the pids that exited since the last call.
    pub fn tick(&mut self) -> Vec<u32> {
        self.probes.flush_log();
        for t in &mut self.targets {
            let st = self.probes.pid_stats(t.pid);
            if st.last_exec_ns > t.purged_before_ns {
                self.probes.purge_allocs(t.pid, st.last_exec_ns);
                t.purged_before_ns = st.last_exec_ns;
            }
        }
        let allocs = self.probes.allocs();
        let fds = self.probes.fds();
        let now = monotonic_ns();
        let min_age = self.min_age.as_nanos() as u64;
        let mut exited = Vec::new();
        for i in 0..self.targets.len() {
            let pid = self.targets[i].pid;
            if self.targets[i].exited_after.is_some() {
                continue;
            }
            if !procfs::alive(pid) {
                let t = &mut self.targets[i];
                t.exited_after = Some(t.attached_at.elapsed());
                if t.comm == "?" || t.comm.is_empty() {
                    t.comm = "python".into();
                }
                exited.push(pid);
                self.probes.remove_target(pid);
                self.symbolizer.forget(pid);
                continue;
            }
            // Descriptors: drop entries whose descriptor is gone (close_range, exec with CLOEXEC).
            let links = procfs::fd_targets(pid).unwrap_or_default();
            let mut open = Vec::new();
            for (k, v) in fds.iter().filter(|(k, _)| k.pid == pid) {
                match links.get(&k.fd) {
                    Some(t) => {
                        if now.saturating_sub(v.ts_ns) >= min_age {
                            open.push(OpenFd {
                                fd: k.fd,
                                info: *v,
                                target: Some(t.clone()),
                            });
                        }
                    }
                    None => self
                        .probes
                        .remove_fd(&FdKey { pid, fd: k.fd }, Some(v.ts_ns)),
                }
            }
            open.sort_by_key(|f| f.fd);
            let mut groups: HashMap<StackKey, AllocGroup> = HashMap::new();
            for (_, a) in allocs.iter().filter(|(k, _)| k.pid == pid) {
                if now.saturating_sub(a.ts_ns) < min_age {
                    continue;
                }
                let g = groups.entry((a.ustack, a.pystack)).or_default();
                g.bytes += a.size;
                g.count += 1;
                if g.oldest_ts == 0 || a.ts_ns < g.oldest_ts {
                    g.oldest_ts = a.ts_ns;
                }
            }
            let mut frames = HashMap::new();
            for id in groups
                .keys()
                .map(|k| k.0)
                .chain(open.iter().map(|f| f.info.ustack))
            {
                frames
                    .entry(id)
                    .or_insert_with(|| self.symbolizer.native(&self.probes, pid, id));
            }
            let t = &mut self.targets[i];
            if let Some(st) = procfs::stat(pid) {
                t.cpu_ticks_last = st.cpu_ticks;
            }
            t.last = Some(ProcSnapshot {
                allocs: groups,
                fds: open,
                stats: self.probes.pid_stats(pid),
                frames,
            });
        }
        exited
    }
}
