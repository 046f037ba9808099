//! Every map of the kernel programs (the user side reads them by these names) and the small
//! helpers that update the shared ones: the global and per-process counters, the traced-process
//! check, the native stack map.

use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap, StackTrace},
    programs::tracing::StackIdContext,
};
use tracer_common::{
    stat, AllocInfo, AllocKey, FdInfo, FdKey, ForkInfo, ForkKey, Grow, GrowKey, MapInfo, MapKey,
    PendingAlloc, PidStats, PyConf,
    PyStack, SampleKey, ALLOC_MAP_CAPACITY, FD_MAP_CAPACITY, NO_STACK, TARGET_TRACED,
};

const BPF_F_NO_PREALLOC: u32 = 1;

/// Traced processes (tgid -> `TARGET_*` flags); a process with `TARGET_FOLLOW_FORKS` alone is
/// not traced, only followed for the processes it starts (a shell between Pythons).
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

#[map]
pub static ALLOCS: HashMap<AllocKey, AllocInfo> =
    HashMap::with_max_entries(ALLOC_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// Per CPU: the last block the allocator's return probe recorded, as (pid_tgid, address), so
/// that `_Py_NewReference` on an object just allocated in it skips the map and the stack walk.
#[map]
pub static FRESH: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static PENDING: HashMap<u64, PendingAlloc> = HashMap::with_max_entries(16384, 0);

#[map]
pub static FDS: HashMap<FdKey, FdInfo> =
    HashMap::with_max_entries(FD_MAP_CAPACITY, BPF_F_NO_PREALLOC);

/// pid -> the time of its last exec (also in `PID_STATS`, but readable from any CPU): a
/// descriptor entry older than it is the previous program's.
#[map]
pub static EXEC_NS: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

/// The previous program's descriptors that were open at the exec and that the new program
/// closed, or whose number it reused, before the user side closed the previous program's
/// entry: what `FDS` held for them at the exec.
#[map]
pub static EXEC_FDS: HashMap<FdKey, FdInfo> = HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// The memory traced processes' heaps grew by, per stack (see `tracer_common::Grow`).
#[map]
pub static GROWS: HashMap<GrowKey, Grow> = HashMap::with_max_entries(16384, 0);

/// The anonymous private mappings of traced processes, with the stack that made them.
#[map]
pub static MAPPINGS: HashMap<MapKey, MapInfo> = HashMap::with_max_entries(65536, 0);

/// The program break of each traced process, as its last brk call left it.
#[map]
pub static BREAKS: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

/// Processes forked by traced processes, until the user side takes them (every 100 ms).
#[map]
pub static FORKS: HashMap<ForkKey, ForkInfo> = HashMap::with_max_entries(8192, 0);

#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(32768, 0);

#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[map]
pub static PID_STATS: PerCpuHashMap<u32, PidStats> = PerCpuHashMap::with_max_entries(4096, 0);

/// Per traced process: how to walk its Python frames.
#[map]
pub static PYCONF: HashMap<u32, PyConf> = HashMap::with_max_entries(4096, 0);

/// pid_tgid -> the thread's PyThreadState address: published by the user side, or found by the
/// kernel walking the interpreter's thread list the first time it sees a thread.
#[map]
pub static THREADS: HashMap<u64, u64> = HashMap::with_max_entries(65536, 0);

/// Python stacks by hash (the `pystack` of allocations and descriptors).
#[map]
pub static PYSTACKS: HashMap<u64, PyStack> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

/// The Python stacks of descriptors, apart from the allocations' (which may fill theirs).
#[map]
pub static FD_PYSTACKS: HashMap<u64, PyStack> =
    HashMap::with_max_entries(8192, BPF_F_NO_PREALLOC);

/// On-CPU samples: (process, Python stack) -> how many (taken and cleared by the user side).
#[map]
pub static SAMPLES: HashMap<SampleKey, u64> = HashMap::with_max_entries(16384, 0);

#[map]
pub static PY_SCRATCH: PerCpuArray<PyStack> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for building an `FdInfo` (too large for comfort on the 512-byte BPF stack).
#[map]
pub static FD_SCRATCH: PerCpuArray<FdInfo> = PerCpuArray::with_max_entries(1, 0);

/// Counts one event in the global counters (`stat::*`).
#[inline(always)]
pub fn bump(idx: u32) {
    if let Some(p) = STATS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

/// Updates the per-process counters of `pid`.
#[inline(always)]
pub fn bump_pid(pid: u32, f: impl FnOnce(&mut PidStats)) {
    if let Some(p) = PID_STATS.get_ptr_mut(pid) {
        unsafe { f(&mut *p) };
    } else {
        let mut s = PidStats::default();
        f(&mut s);
        let _ = PID_STATS.insert(pid, s, 0);
    }
}

/// Is the process traced (not only followed for the processes it starts)?
#[inline(always)]
pub fn traced(tgid: u32) -> bool {
    unsafe { TARGETS.get(tgid) }.is_some_and(|f| f & TARGET_TRACED != 0)
}

/// The current user stack's id in `STACKS`, `NO_STACK` when it could not be recorded.
#[inline(always)]
pub fn user_stack<C: StackIdContext>(ctx: &C) -> i32 {
    match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(_) => {
            bump(stat::STACK_LOST);
            NO_STACK
        }
    }
}
