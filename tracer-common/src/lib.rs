//! Plain types shared by the kernel programs (`tracer-ebpf`) and the user side (`tracer`).
//!
//! Everything here is `#[repr(C)]`, `Copy`, and free of pointers so that it can live in BPF maps.
#![no_std]

/// Bytes of a path (or memfd name) captured in the kernel for a new descriptor.
pub const PATH_LEN: usize = 96;

/// "No stack": the kernel could not record one (or, for Python stacks, none was walked).
pub const NO_STACK: i32 = -1;

/// Capacities of the kernel's outstanding-allocation and open-descriptor maps.
pub const ALLOC_MAP_CAPACITY: u32 = 1 << 20;
pub const FD_MAP_CAPACITY: u32 = 1 << 17;

/// Key of an outstanding allocation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllocKey {
    pub pid: u32,
    pub _pad: u32,
    pub addr: u64,
}

/// An outstanding allocation: requested size, birth time and the stack that made it.
///
/// A stack is identified by the pair (`ustack`, `pystack`): the native user stack id in the
/// `STACKS` map (`NO_STACK` for none) and the key of the Python stack in `PYSTACKS` (0 for none).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct AllocInfo {
    pub size: u64,
    pub ts_ns: u64,
    pub pystack: u64,
    pub ustack: i32,
    /// `ALLOC_*` flags.
    pub flags: u32,
}

/// The block sits in a free list (a dict keys table CPython keeps for reuse): not outstanding
/// until taken again, when it gets the stack of the code that takes it.
pub const ALLOC_FREE_LISTED: u32 = 1;

/// Arguments of an allocator call in flight on one thread, saved at entry for the return probe.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingAlloc {
    pub size: u64,
    /// Stack pointer at entry: the return probe of the same call sees it 8 bytes higher. A
    /// return that does not match (the entry probe was not armed yet, or a nested call) ignores
    /// this entry instead of taking its stack.
    pub sp: u64,
    /// For realloc: the block being resized (removed when the call succeeds).
    pub old: u64,
    pub pystack: u64,
    pub ustack: i32,
    pub _pad: u32,
}

/// How the kernel walks one process's Python frames (from its interpreter's layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PyConf {
    /// `FRAMES_*`: which frame structure this interpreter uses.
    pub kind: u32,
    /// PyThreadState -> frame (<=3.10), cframe (3.11/3.12) or current_frame (3.13+).
    pub tstate_frame: u32,
    /// _PyCFrame -> current_frame (3.11/3.12), else `NO_OFFSET`.
    pub cframe_current: u32,
    pub frame_code: u32,
    pub frame_back: u32,
    /// f_lasti (an int, legacy frames) or the instruction pointer (3.11+).
    pub frame_instr: u32,
    /// `owner` byte of _PyInterpreterFrame, else `NO_OFFSET`: frames whose owner is
    /// `owner_not_python` or more are not Python code (C stack shims, interpreter entry frames)
    /// and are skipped.
    pub frame_owner: u32,
    /// PyThreadState -> next.
    pub tstate_next: u32,
    /// Address of the interpreter's thread list head (0 until the runtime is known): lets the
    /// kernel find the thread state of a thread the user side has not published yet.
    pub threads_head: u64,
    /// PyThreadState -> native_thread_id (3.11+), else `NO_OFFSET`.
    pub tstate_tid: u32,
    /// PyThreadState -> thread_id (pthread_self), used with `pthread_tid` before 3.11.
    pub tstate_pthread: u32,
    /// glibc's struct pthread -> tid, `NO_OFFSET` when unknown.
    pub pthread_tid: u32,
    /// See `frame_owner` (256 when no value is skipped).
    pub owner_not_python: u32,
    /// The process's pid namespace (device and inode of /proc/PID/ns/pid) when it is not the
    /// host's (a container), else 0: thread states hold thread ids of that namespace.
    pub pidns_dev: u64,
    pub pidns_ino: u64,
    /// Low bits of the frame's code reference that tag it (3.14+: a _PyStackRef), cleared.
    pub code_tag_bits: u64,
    /// Address of the runtime's interpreter list head (`_PyRuntime.interpreters.head`), and
    /// PyInterpreterState -> threads.head: while `threads_head` is 0 (an interpreter that was
    /// starting when it was last read), the kernel follows these two itself, so a new
    /// process's threads have their frames from its first line, without waiting for the user
    /// side to read its interpreter again.
    pub interp_head: u64,
    pub interp_threads: u32,
    pub _pad: u32,
}

pub const NO_OFFSET: u32 = u32::MAX;
pub const FRAMES_LEGACY: u32 = 1;
pub const FRAMES_INTERP: u32 = 2;

/// Frames kept per event; deeper stacks keep their innermost frames and are marked truncated.
pub const PY_MAX_FRAMES: usize = 48;

/// One Python frame: the code object and where in it execution is (f_lasti or an instruction
/// pointer). Names, files and lines are resolved in user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PyFrame {
    pub code: u64,
    pub instr: u64,
}

/// A Python stack, innermost frame first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PyStack {
    pub len: u32,
    pub truncated: u32,
    pub frames: [PyFrame; PY_MAX_FRAMES],
}

/// Key of an open descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FdKey {
    pub pid: u32,
    pub fd: u32,
}

/// What a descriptor refers to, as far as the kernel side can tell cheaply.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    Unknown = 0,
    File = 1,
    Socket = 2,
    Pipe = 3,
    Eventfd = 4,
    Epoll = 5,
    Memfd = 6,
    Signalfd = 7,
    Timerfd = 8,
    Inotify = 9,
    Fanotify = 10,
    Pidfd = 11,
    Userfaultfd = 12,
    PerfEvent = 13,
    IoUring = 14,
    /// A duplicate of a descriptor the tracer did not see being created.
    Dup = 15,
}

impl FdKind {
    pub fn from_u16(v: u16) -> FdKind {
        match v {
            1 => FdKind::File,
            2 => FdKind::Socket,
            3 => FdKind::Pipe,
            4 => FdKind::Eventfd,
            5 => FdKind::Epoll,
            6 => FdKind::Memfd,
            7 => FdKind::Signalfd,
            8 => FdKind::Timerfd,
            9 => FdKind::Inotify,
            10 => FdKind::Fanotify,
            11 => FdKind::Pidfd,
            12 => FdKind::Userfaultfd,
            13 => FdKind::PerfEvent,
            14 => FdKind::IoUring,
            15 => FdKind::Dup,
            _ => FdKind::Unknown,
        }
    }
}

/// An open descriptor.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FdInfo {
    pub ts_ns: u64,
    pub pystack: u64,
    pub ustack: i32,
    /// `FdKind` as u16.
    pub kind: u16,
    /// The syscall number that created it.
    pub syscall: u16,
    /// Socket: address family. Dup: the source descriptor.
    pub a: u32,
    /// Socket: type (SOCK_STREAM, ...), flags masked off.
    pub b: u32,
    pub tid: u32,
    /// NUL-terminated path (files) or name (memfd), possibly truncated.
    pub path: [u8; PATH_LEN],
}

/// Indexes of the global per-CPU counters (`STATS`).
pub mod stat {
    /// Allocator entry probes that fired for a traced process.
    pub const ALLOC_CALLS: u32 = 0;
    /// Free probes that fired for a traced process.
    pub const FREE_CALLS: u32 = 1;
    /// Allocations not recorded because the allocation map was full.
    pub const ALLOC_MAP_FULL: u32 = 2;
    /// Stacks the kernel could not record (stack map full or collision).
    pub const STACK_LOST: u32 = 3;
    /// Descriptors created by a traced process.
    pub const FD_OPENS: u32 = 4;
    /// Descriptors closed by a traced process.
    pub const FD_CLOSES: u32 = 5;
    /// Descriptors not recorded because the descriptor map was full.
    pub const FD_MAP_FULL: u32 = 6;
    /// Return probes without a matching entry (nested or missed entries).
    pub const ALLOC_UNPAIRED: u32 = 7;
    /// Python stacks not recorded because the Python stack map was full.
    pub const PYSTACK_LOST: u32 = 8;
    /// Events from a thread whose PyThreadState the user side had not published yet.
    pub const PY_THREAD_UNKNOWN: u32 = 9;
    /// Outstanding blocks given the stack of the code that created an object in them again
    /// (`_Py_NewReference` on a block a free list handed out without the allocator).
    pub const RECYCLED: u32 = 10;
    /// Processes forked by a traced process that could not be recorded (`FORKS` full).
    pub const FORK_LOST: u32 = 11;
    pub const COUNT: u32 = 12;
}

/// Per-process counters (`PID_STATS`, per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PidStats {
    pub alloc_calls: u64,
    pub free_calls: u64,
    pub fd_opens: u64,
    pub fd_closes: u64,
    /// Successful execve/execveat calls, and the time of the last one.
    pub execs: u64,
    pub last_exec_ns: u64,
}

/// x86_64 syscall numbers the descriptor tracker understands.
pub mod sys {
    pub const PIPE: u32 = 22;
    pub const CLOSE: u32 = 3;
    pub const OPEN: u32 = 2;
    pub const DUP: u32 = 32;
    pub const DUP2: u32 = 33;
    pub const SOCKET: u32 = 41;
    pub const ACCEPT: u32 = 43;
    pub const SOCKETPAIR: u32 = 53;
    pub const FCNTL: u32 = 72;
    pub const CREAT: u32 = 85;
    pub const EPOLL_CREATE: u32 = 213;
    pub const INOTIFY_INIT: u32 = 253;
    pub const OPENAT: u32 = 257;
    pub const SIGNALFD: u32 = 282;
    pub const TIMERFD_CREATE: u32 = 283;
    pub const EVENTFD: u32 = 284;
    pub const ACCEPT4: u32 = 288;
    pub const SIGNALFD4: u32 = 289;
    pub const EVENTFD2: u32 = 290;
    pub const EPOLL_CREATE1: u32 = 291;
    pub const DUP3: u32 = 292;
    pub const PIPE2: u32 = 293;
    pub const INOTIFY_INIT1: u32 = 294;
    pub const PERF_EVENT_OPEN: u32 = 298;
    pub const FANOTIFY_INIT: u32 = 300;
    pub const OPEN_BY_HANDLE_AT: u32 = 304;
    pub const MEMFD_CREATE: u32 = 319;
    pub const USERFAULTFD: u32 = 323;
    pub const IO_URING_SETUP: u32 = 425;
    pub const PIDFD_OPEN: u32 = 434;
    pub const CLOSE_RANGE: u32 = 436;
    pub const OPENAT2: u32 = 437;
    pub const PIDFD_GETFD: u32 = 438;
    pub const MEMFD_SECRET: u32 = 447;
    pub const EXECVE: u32 = 59;
    pub const EXECVEAT: u32 = 322;
    pub const MMAP: u32 = 9;
    pub const MPROTECT: u32 = 10;
    pub const MUNMAP: u32 = 11;
    pub const BRK: u32 = 12;
    pub const CLONE: u32 = 56;
    pub const FORK: u32 = 57;
    pub const VFORK: u32 = 58;
    pub const CLONE3: u32 = 435;

    pub const MAP_SHARED: u64 = 0x01;
    pub const MAP_ANONYMOUS: u64 = 0x20;
    pub const MAP_STACK: u64 = 0x20000;
    pub const PROT_WRITE: u64 = 0x2;
    pub const CLONE_VFORK: u64 = 0x4000;
    pub const CLONE_THREAD: u64 = 0x10000;

    pub const F_DUPFD: u64 = 0;
    pub const F_DUPFD_CLOEXEC: u64 = 1030;
}

/// `TARGETS` flag: the process is traced.
pub const TARGET_TRACED: u32 = 1;
/// `TARGETS` flag: the on-CPU sampler records the process's Python stacks.
pub const TARGET_SAMPLED: u32 = 2;
/// `TARGETS` flag: the processes it forks are traced from their first instruction (the kernel
/// enters them in `TARGETS`; `--children`, and the Python processes of a launched command).
pub const TARGET_FOLLOW_FORKS: u32 = 4;
/// `TARGETS` flag: the process shares tracer's pid namespace, so the pid fork returns is the
/// child's pid as the kernel's maps key it.
pub const TARGET_HOST_PIDNS: u32 = 8;

/// The memory a traced process's heap grew by at one stack (`GROWS` key).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct GrowKey {
    pub pid: u32,
    pub ustack: i32,
    pub pystack: u64,
}

/// How: the program break moved up (brk: glibc's main heap), private anonymous memory mapped
/// (mmap: large malloc chunks, pymalloc's arenas, extensions' allocators) or made writable
/// (mprotect: glibc's thread arenas growing). Bytes and calls, since attach (`GROWS` value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Grow {
    pub brk_bytes: u64,
    pub mmap_bytes: u64,
    pub calls: u64,
}

/// An anonymous private mapping a traced process made, until it unmaps it (`MAPPINGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MapKey {
    pub pid: u32,
    pub _pad: u32,
    pub addr: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapInfo {
    pub len: u64,
    pub ustack: i32,
    pub _pad: u32,
    pub pystack: u64,
}

/// A process forked by a traced one (`FORKS` key): the parent (host pid) and the child's pid
/// as fork returned it (in the parent's pid namespace).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ForkKey {
    pub parent: u32,
    pub child: u32,
}

/// What the kernel knows of a fork (`FORKS` value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkInfo {
    pub ts_ns: u64,
    /// `FORK_*` flags.
    pub flags: u32,
    pub _pad: u32,
}

/// The child shares its parent's memory until it execs (vfork, posix_spawn): it has run (and
/// usually exec'd) before the parent's call returns, so its image is not its parent's.
pub const FORK_VFORK: u32 = 1;
/// The kernel entered the child in `TARGETS` (the parent follows forks, in tracer's pid
/// namespace) with the parent's Python walk.
pub const FORK_ADOPTED: u32 = 2;

/// An on-CPU sample's key: the process and its Python stack (`PYSTACKS` key).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SampleKey {
    pub pid: u32,
    pub _pad: u32,
    pub stack: u64,
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for AllocKey {}
    unsafe impl aya::Pod for AllocInfo {}
    unsafe impl aya::Pod for PendingAlloc {}
    unsafe impl aya::Pod for FdKey {}
    unsafe impl aya::Pod for FdInfo {}
    unsafe impl aya::Pod for PidStats {}
    unsafe impl aya::Pod for PyConf {}
    unsafe impl aya::Pod for PyStack {}
    unsafe impl aya::Pod for SampleKey {}
    unsafe impl aya::Pod for ForkKey {}
    unsafe impl aya::Pod for GrowKey {}
    unsafe impl aya::Pod for Grow {}
    unsafe impl aya::Pod for MapKey {}
    unsafe impl aya::Pod for MapInfo {}
    unsafe impl aya::Pod for ForkInfo {}
}
