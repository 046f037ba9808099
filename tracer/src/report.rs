//! The report model: per process, outstanding allocations and open descriptors grouped by stack,
//! with labels ready for any renderer. It knows nothing of output formats.

use std::time::Duration;

use tracer_common::{stat, FdKind, PATH_LEN};

use crate::collect::{monotonic_ns, Collector, OpenFd, Target};
use crate::python::{HookSource, Interpreter};

#[derive(Debug, Clone)]
pub struct AllocStack {
    /// Frames root first, below the process frame.
    pub frames: Vec<String>,
    pub bytes: u64,
    pub count: u64,
    pub oldest_age: Duration,
}

#[derive(Debug, Clone)]
pub struct FdStack {
    /// Frames root first, below the process frame; the last one names the resource.
    pub frames: Vec<String>,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Coverage {
    /// The hooks see the allocator's calls.
    Good { calls_per_cpu_s: Option<f64> },
    /// The hooks see a fraction of the allocations only.
    Low { reason: String },
    /// No allocator functions could be hooked.
    None { reason: String },
}

#[derive(Debug, Clone)]
pub struct ProcReport {
    pub pid: u32,
    pub comm: String,
    pub interpreter: String,
    pub exited_after: Option<Duration>,
    pub allocs: Vec<AllocStack>,
    pub fds: Vec<FdStack>,
    pub total_bytes: u64,
    pub total_allocs: u64,
    pub open_fds: u64,
    pub coverage: Coverage,
    pub alloc_calls: u64,
    pub cpu_seconds: f64,
}

impl ProcReport {
    /// The root frame of every stack of this process.
    pub fn root_frame(&self) -> String {
        format!("{} (pid {})", self.comm, self.pid)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Health {
    pub alloc_map_full: u64,
    pub fd_map_full: u64,
    pub stacks_lost: u64,
    pub alloc_calls: u64,
    pub free_calls: u64,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub elapsed: Duration,
    pub min_age: Duration,
    pub procs: Vec<ProcReport>,
    pub health: Health,
}

/// Below this many allocator calls per CPU-second of the target, the hooks are missing most of
/// the heap: an interpreter running Python code allocates far more often (hundreds of thousands of
/// times per second untraced; ~30,000+ per second even under the ~20 us cost of each probe).
const LOW_CALL_RATE: f64 = 2000.0;
/// Judge the call rate only once the target has used this much CPU.
const MIN_CPU_TO_JUDGE: f64 = 0.3;

pub fn assess_coverage(interp: &Interpreter, alloc_calls: u64, cpu_seconds: f64) -> Coverage {
    if interp.alloc.source == HookSource::None || interp.alloc.hooks.is_empty() {
        return Coverage::None {
            reason: interp.alloc.notes.join("; "),
        };
    }
    let rate = (cpu_seconds >= MIN_CPU_TO_JUDGE).then(|| alloc_calls as f64 / cpu_seconds);
    if interp.alloc.inlined_fast_path {
        return Coverage::Low {
            reason: format!(
                "this build inlines pymalloc into its callers (LTO/PGO): the hooks only see allocations that miss the inlined fast path{}",
                rate.map(|r| format!(" (measured {r:.0} allocator calls per CPU-second)")).unwrap_or_default()
            ),
        };
    }
    match rate {
        Some(r) if r < LOW_CALL_RATE => Coverage::Low {
            reason: format!(
                "only {alloc_calls} allocator calls seen in {cpu_seconds:.1} CPU-seconds of the target ({r:.0}/s): most allocations bypass the hooked functions"
            ),
        },
        r => Coverage::Good { calls_per_cpu_s: r },
    }
}

/// A descriptor's resource, as the leaf frame of its stack.
pub fn fd_label(f: &OpenFd) -> String {
    let info = &f.info;
    let kpath = {
        let end = info.path.iter().position(|&b| b == 0).unwrap_or(PATH_LEN);
        String::from_utf8_lossy(&info.path[..end]).into_owned()
    };
    let link = f.target.as_deref().unwrap_or("");
    let from_link = || -> String {
        if let Some(rest) = link.strip_prefix("anon_inode:") {
            format!("[{}]", rest.trim_matches(|c| c == '[' || c == ']'))
        } else if link.starts_with("socket:") {
            "[socket]".into()
        } else if link.starts_with("pipe:") {
            "[pipe]".into()
        } else if link.is_empty() {
            "[fd]".into()
        } else {
            format!("[file {link}]")
        }
    };
    match FdKind::from_u16(info.kind) {
        FdKind::File => {
            let p = if link.starts_with('/') {
                link.to_string()
            } else {
                kpath
            };
            format!("[file {p}]")
        }
        FdKind::Socket => format!("[socket {}]", socket_kind(info.a, info.b)),
        FdKind::Pipe => "[pipe]".into(),
        FdKind::Eventfd => "[eventfd]".into(),
        FdKind::Epoll => "[epoll]".into(),
        FdKind::Memfd => {
            if kpath.is_empty() {
                "[memfd]".into()
            } else {
                format!("[memfd {kpath}]")
            }
        }
        FdKind::Signalfd => "[signalfd]".into(),
        FdKind::Timerfd => "[timerfd]".into(),
        FdKind::Inotify => "[inotify]".into(),
        FdKind::Fanotify => "[fanotify]".into(),
        FdKind::Pidfd => "[pidfd]".into(),
        FdKind::Userfaultfd => "[userfaultfd]".into(),
        FdKind::PerfEvent => "[perf_event]".into(),
        FdKind::IoUring => "[io_uring]".into(),
        FdKind::Dup | FdKind::Unknown => from_link(),
    }
}

pub fn socket_kind(family: u32, ty: u32) -> String {
    let fam = match family {
        1 => "unix",
        2 => "inet",
        10 => "inet6",
        16 => "netlink",
        17 => "packet",
        40 => "vsock",
        0 => "unknown",
        n => return format!("family{n}"),
    };
    let t = match (family, ty) {
        (2 | 10, 1) => "tcp",
        (2 | 10, 2) => "udp",
        (_, 1) => "stream",
        (_, 2) => "dgram",
        (_, 3) => "raw",
        (_, 5) => "seqpacket",
        _ => "other",
    };
    format!("{fam}/{t}")
}

fn process_report(t: &Target, ticks_per_s: u64) -> ProcReport {
    let snap = t.last.clone().unwrap_or_default();
    let now = monotonic_ns();
    let frames_of = |k: (i32, u64)| snap.frames.get(&k).cloned().unwrap_or_default();
    let mut allocs: Vec<AllocStack> = snap
        .allocs
        .iter()
        .map(|(k, g)| AllocStack {
            frames: frames_of(*k),
            bytes: g.bytes,
            count: g.count,
            oldest_age: Duration::from_nanos(now.saturating_sub(g.oldest_ts)),
        })
        .collect();
    allocs.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.frames.cmp(&b.frames)));
    let mut fds: Vec<FdStack> = Vec::new();
    for f in &snap.fds {
        let mut frames = frames_of((f.info.ustack, f.info.pystack));
        frames.push(fd_label(f));
        match fds.iter_mut().find(|s| s.frames == frames) {
            Some(s) => s.count += 1,
            None => fds.push(FdStack { frames, count: 1 }),
        }
    }
    fds.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.frames.cmp(&b.frames)));
    let cpu_seconds =
        t.cpu_ticks_last.saturating_sub(t.cpu_ticks_at_start) as f64 / ticks_per_s as f64;
    ProcReport {
        pid: t.pid,
        comm: t.comm.clone(),
        interpreter: format!("CPython {} ({})", t.interp.version, t.interp.target_path),
        exited_after: t.exited_after,
        total_bytes: allocs.iter().map(|a| a.bytes).sum(),
        total_allocs: allocs.iter().map(|a| a.count).sum(),
        open_fds: snap.fds.len() as u64,
        coverage: assess_coverage(&t.interp, snap.stats.alloc_calls, cpu_seconds),
        alloc_calls: snap.stats.alloc_calls,
        cpu_seconds,
        allocs,
        fds,
    }
}

pub fn build(c: &Collector, elapsed: Duration) -> Report {
    let ticks = crate::procfs::clock_ticks_per_sec();
    let s = c.probes.stats();
    Report {
        elapsed,
        min_age: c.min_age,
        procs: c.targets.iter().map(|t| process_report(t, ticks)).collect(),
        health: Health {
            alloc_map_full: s[stat::ALLOC_MAP_FULL as usize],
            fd_map_full: s[stat::FD_MAP_FULL as usize],
            stacks_lost: s[stat::STACK_LOST as usize],
            alloc_calls: s[stat::ALLOC_CALLS as usize],
            free_calls: s[stat::FREE_CALLS as usize],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_kinds() {
        assert_eq!(socket_kind(2, 1), "inet/tcp");
        assert_eq!(socket_kind(10, 2), "inet6/udp");
        assert_eq!(socket_kind(1, 1), "unix/stream");
        assert_eq!(socket_kind(1, 5), "unix/seqpacket");
        assert_eq!(socket_kind(99, 1), "family99");
    }
}
