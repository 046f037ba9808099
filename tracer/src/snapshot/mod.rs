//! The plain data the collector hands over: per traced process, its last snapshot of the kernel
//! maps (stacks as frames), its checkpoints and what its heap census found, borrowed from the
//! collector's entries. The report is built from this alone; neither side imports the other.

pub mod census;

use std::collections::HashMap;
use std::time::Duration;

use tracer_common::{FdInfo, FdKind, PidStats, PATH_LEN};

use crate::config::Mode;
use crate::frame::Frame;
use crate::verdict::verdict_key;
use census::CensusFacts;

/// A stack's frames, root first, shared by every checkpoint that has it (a recording of hours
/// keeps each stack once, not once per checkpoint).
pub type Stack = std::sync::Arc<Vec<Frame>>;

/// Outstanding values per stack (frames, root first) at one checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// Seconds since tracing began.
    pub at: f64,
    /// Bytes and objects (allocations, or live samples in watch mode) per stack.
    pub allocs: HashMap<Stack, (u64, u64)>,
    /// Open descriptors per site: the stack and the kind of resource, without its name.
    pub fds: HashMap<Stack, u64>,
}

/// At most this many stacks of each kind per checkpoint: the largest; the others are summed
/// under one `[smaller stacks]` key (counted in `History::folded`).
pub const MAX_CHECKPOINT_STACKS: usize = 1024;
/// At most this many checkpoints per process: beyond, every other one of the older half goes
/// (the recent half keeps its resolution, the first checkpoint stays).
pub const MAX_CHECKPOINTS: usize = 96;

/// A process's checkpoints, bounded in memory whatever the number of stacks and the length of
/// the recording.
#[derive(Debug, Default)]
pub struct History {
    pub checkpoints: Vec<Checkpoint>,
    /// Every stack once (checkpoints share them).
    interned: std::collections::HashSet<Stack>,
    /// Stacks summed under `[smaller stacks]` at the last checkpoint.
    pub folded: u64,
}

impl History {
    /// The shared copy of `frames`.
    pub fn intern(&mut self, frames: Vec<Frame>) -> Stack {
        if let Some(s) = self.interned.get(&frames) {
            return s.clone();
        }
        let s: Stack = std::sync::Arc::new(frames);
        self.interned.insert(s.clone());
        s
    }

    /// Adds a checkpoint of (stack, value) pairs, keeping the largest stacks and thinning the
    /// history when it is full; stacks no checkpoint holds any more are forgotten.
    pub fn push(
        &mut self,
        at: f64,
        allocs: HashMap<Vec<Frame>, (u64, u64)>,
        fds: HashMap<Vec<Frame>, u64>,
    ) {
        let mut folded = 0;
        let allocs = cap(allocs, |v| v.0, |a, b| (a.0 + b.0, a.1 + b.1), &mut folded);
        let fds = cap(fds, |v| *v, |a, b| a + b, &mut folded);
        self.folded = folded;
        let cp = Checkpoint {
            at,
            allocs: allocs
                .into_iter()
                .map(|(k, v)| (self.intern(k), v))
                .collect(),
            fds: fds.into_iter().map(|(k, v)| (self.intern(k), v)).collect(),
        };
        self.checkpoints.push(cp);
        if self.checkpoints.len() > MAX_CHECKPOINTS {
            let old_half = self.checkpoints.len() / 2;
            let mut i = 0;
            self.checkpoints.retain(|_| {
                i += 1;
                // Keep the first, and every other one of the older half.
                i == 1 || i > old_half || i % 2 == 0
            });
        }
        // Stacks that no checkpoint holds any more.
        self.interned
            .retain(|s| std::sync::Arc::strong_count(s) > 1);
    }

    pub fn clear(&mut self) {
        self.checkpoints.clear();
        self.interned.clear();
    }
}

/// The `MAX_CHECKPOINT_STACKS` largest entries of `m`; the rest summed under one key.
fn cap<V: Copy + Default>(
    m: HashMap<Vec<Frame>, V>,
    size: impl Fn(&V) -> u64,
    add: impl Fn(V, V) -> V,
    folded: &mut u64,
) -> HashMap<Vec<Frame>, V> {
    if m.len() <= MAX_CHECKPOINT_STACKS {
        return m;
    }
    let mut v: Vec<(Vec<Frame>, V)> = m.into_iter().collect();
    v.sort_by(|a, b| size(&b.1).cmp(&size(&a.1)).then_with(|| a.0.cmp(&b.0)));
    let rest = v.split_off(MAX_CHECKPOINT_STACKS - 1);
    *folded += rest.len() as u64;
    let sum = rest
        .into_iter()
        .fold(V::default(), |acc, (_, x)| add(acc, x));
    let mut out: HashMap<Vec<Frame>, V> = v.into_iter().collect();
    out.insert(
        vec![Frame::Marker(crate::frame::Marker::SmallerStacks)],
        sum,
    );
    out
}

/// Stack key: native stack id and Python stack key.
pub type StackKey = (i32, u64);

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
    /// Where the heap grew since attach, by stack: bytes the program break moved up by, and
    /// bytes of the anonymous mappings made there that are still mapped (or made writable).
    pub grows: HashMap<StackKey, (u64, u64)>,
    pub stats: PidStats,
    /// Frames of every stack in this snapshot, root first (resolved while the process lives).
    pub frames: HashMap<StackKey, Vec<Frame>>,
}

impl ProcSnapshot {
    /// The descriptor site of an open descriptor, as verdicts group it: its Python call path
    /// and the kind of resource.
    pub fn fd_site(&self, f: &OpenFd) -> Vec<Frame> {
        let mut frames = verdict_key(
            self.frames
                .get(&(f.info.ustack, f.info.pystack))
                .cloned()
                .unwrap_or_default(),
        );
        frames.push(fd_label(f).without_name());
        frames
    }
}

/// What the allocator hooks of an interpreter can see (from its inspection).
#[derive(Debug, Clone, Default)]
pub struct HookCoverage {
    /// Allocator functions were found to hook.
    pub hooked: bool,
    /// Why not, or what is missing, when they were not.
    pub notes: String,
    /// The build inlines pymalloc into its callers (LTO/PGO): the hooks see the slow path only.
    pub inlined_fast_path: bool,
}

/// One traced process's entry (live, or closed by an exit or an exec), as the report reads it.
#[derive(Debug, Clone)]
pub struct TargetView<'a> {
    /// Entries are numbered in the order they were attached (the reports list them so).
    pub seq: u64,
    pub pid: u32,
    pub comm: &'a str,
    /// Short id (or name) of the container the process runs in (None on the host).
    pub container: Option<&'a str>,
    /// Its pid in its own pid namespace, when that is not the host's.
    pub nspid: Option<u32>,
    /// `CPython VERSION (path)`.
    pub interpreter: String,
    pub hooks: HookCoverage,
    pub exited_after: Option<Duration>,
    /// The program the process exec'd.
    pub execd: Option<&'a str>,
    /// The last snapshot taken while the process was alive.
    pub last: Option<&'a ProcSnapshot>,
    /// Checkpoints, oldest first.
    pub history: &'a [Checkpoint],
    /// Allocator calls the kernel had counted for the pid before this entry.
    pub alloc_calls_base: u64,
    /// CPU time the process used while traced.
    pub cpu_seconds: f64,
    /// Watch mode: allocator windows run, their survivors still alive, time the probes were armed.
    pub windows: u64,
    pub survivors: u64,
    pub armed: Duration,
    /// How long it has been (or was, until it ended) traced.
    pub traced_for: Duration,
    pub census: Option<CensusFacts>,
    /// Resident memory split into parts, at each census pass (seconds since tracing began).
    pub resident: &'a [(f64, crate::resident::Breakdown)],
    /// What tracer cannot read in this process, one line.
    pub warning: Option<String>,
}

/// The collector as the report reads it.
/// Processes that could not be traced, by why (said in the summary and report.json).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Missed {
    /// Found (by a scan, a fork or an exec) but gone before they could be attached.
    pub exited_before_attach: u64,
    /// Forks the kernel could not record (its map was full).
    pub forks_lost: u64,
}

#[derive(Debug, Clone)]
pub struct CollectorView<'a> {
    pub mode: Mode,
    pub interval: Duration,
    /// Watch mode: window length and budget (percent of the time the probes may be armed).
    pub window: Duration,
    pub budget: f64,
    /// Watch mode without a budget: no allocator probe at all.
    pub probes_off: bool,
    pub min_age: Duration,
    /// The live entries, in the order they were attached.
    pub targets: Vec<TargetView<'a>>,
    /// The kernel programs' counters (`tracer_common::stat`).
    pub kernel_stats: Vec<u64>,
    /// Entries in the allocation and descriptor maps at the last tick.
    pub map_entries: (u64, u64),
    pub missed: Missed,
}

/// A descriptor's resource, as the leaf frame of its stack.
pub fn fd_label(f: &OpenFd) -> Frame {
    let info = &f.info;
    let kpath = {
        let end = info.path.iter().position(|&b| b == 0).unwrap_or(PATH_LEN);
        String::from_utf8_lossy(&info.path[..end]).into_owned()
    };
    let link = f.target.as_deref().unwrap_or("");
    let res = |kind: &str, name: Option<String>| Frame::Resource {
        kind: kind.to_string(),
        name,
    };
    let from_link = || -> Frame {
        if let Some(rest) = link.strip_prefix("anon_inode:") {
            res(rest.trim_matches(|c| c == '[' || c == ']'), None)
        } else if link.starts_with("socket:") {
            res("socket", None)
        } else if link.starts_with("pipe:") {
            res("pipe", None)
        } else if link.is_empty() {
            res("fd", None)
        } else {
            res("file", Some(link.to_string()))
        }
    };
    match FdKind::from_u16(info.kind) {
        FdKind::File => {
            let p = if link.starts_with('/') {
                link.to_string()
            } else {
                kpath
            };
            res("file", Some(p))
        }
        FdKind::Socket => res(&format!("socket {}", socket_kind(info.a, info.b)), None),
        FdKind::Pipe => res("pipe", None),
        FdKind::Eventfd => res("eventfd", None),
        FdKind::Epoll => res("epoll", None),
        FdKind::Memfd => res("memfd", (!kpath.is_empty()).then_some(kpath)),
        FdKind::Signalfd => res("signalfd", None),
        FdKind::Timerfd => res("timerfd", None),
        FdKind::Inotify => res("inotify", None),
        FdKind::Fanotify => res("fanotify", None),
        FdKind::Pidfd => res("pidfd", None),
        FdKind::Userfaultfd => res("userfaultfd", None),
        FdKind::PerfEvent => res("perf_event", None),
        FdKind::IoUring => res("io_uring", None),
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

    fn stack(i: u64) -> Vec<Frame> {
        vec![Frame::python("f", &format!("app{i}.py"), Some(1))]
    }

    /// Thousands of stacks over hundreds of checkpoints: at most `MAX_CHECKPOINT_STACKS` per
    /// checkpoint (the rest summed), at most `MAX_CHECKPOINTS` checkpoints (the first kept, the
    /// recent ones dense), each stack held once.
    #[test]
    fn history_is_bounded() {
        let mut h = History::default();
        for c in 0..300u64 {
            let allocs: HashMap<Vec<Frame>, (u64, u64)> =
                (0..5000).map(|i| (stack(i), (i + 1, 1))).collect();
            h.push(c as f64, allocs, HashMap::new());
        }
        assert!(h.checkpoints.len() <= MAX_CHECKPOINTS);
        assert_eq!(h.checkpoints[0].at, 0.0);
        assert_eq!(h.checkpoints.last().unwrap().at, 299.0);
        let last = h.checkpoints.last().unwrap();
        assert_eq!(last.allocs.len(), MAX_CHECKPOINT_STACKS);
        let total: u64 = last.allocs.values().map(|v| v.0).sum();
        assert_eq!(
            total,
            (1..=5000).sum::<u64>(),
            "nothing lost: the rest is summed"
        );
        assert_eq!(h.folded, 5000 - MAX_CHECKPOINT_STACKS as u64 + 1);
        assert!(
            h.interned.len() <= MAX_CHECKPOINT_STACKS,
            "{}",
            h.interned.len()
        );
        // The recent half keeps its resolution.
        let ats: Vec<f64> = h.checkpoints.iter().map(|c| c.at).collect();
        assert!(ats.ends_with(&[297.0, 298.0, 299.0]), "{ats:?}");
    }
}
