//! Kernel side of tracer.
//!
//! - Allocator probes (uprobe at entry, uretprobe at return) on CPython's real allocator functions:
//!   outstanding blocks live in `ALLOCS`, keyed by (pid, address). Frees delete. Nested calls
//!   (pymalloc falling back to the raw domain) return the same address, so a block is counted once.
//! - Descriptor tracking from the `sys_exit` raw tracepoint: every descriptor-creating syscall of a
//!   traced process inserts into `FDS`, keyed by (pid, fd); close/dup2/dup3 over an open fd remove or
//!   replace. The syscall arguments are read from the saved user registers at exit.
//!
//! Only processes listed in `TARGETS` are tracked.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{bpf_pidns_info, BPF_F_USER_STACK},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_ns_current_pid_tgid, bpf_ktime_get_ns, bpf_loop, bpf_probe_read_kernel,
        bpf_probe_read_user, bpf_probe_read_user_str_bytes,
    },
    macros::{map, raw_tracepoint, uprobe, uretprobe},
    maps::{HashMap, PerCpuArray, PerCpuHashMap, StackTrace},
    programs::{tracing::StackIdContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use aya_log_ebpf::warn;
use tracer_common::{
    ALLOC_MAP_CAPACITY, FD_MAP_CAPACITY,
    stat, sys, AllocInfo, AllocKey, FdInfo, FdKey, FdKind, PendingAlloc, PidStats, PyConf, PyStack,
    FRAMES_LEGACY, NO_OFFSET, NO_STACK, PATH_LEN, PY_MAX_FRAMES,
};

const BPF_F_NO_PREALLOC: u32 = 1;

/// Traced processes (tgid -> flags).
#[map]
static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(4096, 0);

#[map]
static ALLOCS: HashMap<AllocKey, AllocInfo> = HashMap::with_max_entries(ALLOC_MAP_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static PENDING: HashMap<u64, PendingAlloc> = HashMap::with_max_entries(16384, 0);

#[map]
static FDS: HashMap<FdKey, FdInfo> = HashMap::with_max_entries(FD_MAP_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(32768, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[map]
static PID_STATS: PerCpuHashMap<u32, PidStats> = PerCpuHashMap::with_max_entries(4096, 0);

/// Per traced process: how to walk its Python frames.
#[map]
static PYCONF: HashMap<u32, PyConf> = HashMap::with_max_entries(4096, 0);

/// pid_tgid -> the thread's PyThreadState address: published by the user side, or found by the
/// kernel walking the interpreter's thread list the first time it sees a thread.
#[map]
static THREADS: HashMap<u64, u64> = HashMap::with_max_entries(65536, 0);

/// Python stacks by hash (the `pystack` of allocations and descriptors).
#[map]
static PYSTACKS: HashMap<u64, PyStack> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);

#[map]
static PY_SCRATCH: PerCpuArray<PyStack> = PerCpuArray::with_max_entries(1, 0);

/// Scratch space for building an `FdInfo` (too large for comfort on the 512-byte BPF stack).
#[map]
static FD_SCRATCH: PerCpuArray<FdInfo> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn bump(idx: u32) {
    if let Some(p) = STATS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn bump_pid(pid: u32, f: impl FnOnce(&mut PidStats)) {
    if let Some(p) = PID_STATS.get_ptr_mut(pid) {
        unsafe { f(&mut *p) };
    } else {
        let mut s = PidStats::default();
        f(&mut s);
        let _ = PID_STATS.insert(pid, s, 0);
    }
}

#[inline(always)]
fn traced(tgid: u32) -> bool {
    unsafe { TARGETS.get(tgid).is_some() }
}

#[inline(always)]
fn user_stack<C: StackIdContext>(ctx: &C) -> i32 {
    match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => id as i32,
        Err(_) => {
            bump(stat::STACK_LOST);
            NO_STACK
        }
    }
}

#[inline(always)]
fn read_u64(addr: u64) -> u64 {
    unsafe { bpf_probe_read_user(addr as *const u64).unwrap_or(0) }
}

#[inline(always)]
fn mix(h: u64, v: u64) -> u64 {
    // FNV-1a over 64-bit words, then a final avalanche in `finish`.
    (h ^ v).wrapping_mul(0x100000001b3)
}

/// State of one Python stack walk, shared with the `bpf_loop` callback.
#[repr(C)]
struct Walk {
    frame: u64,
    n: u64,
    h: u64,
    kind: u32,
    code: u32,
    back: u32,
    instr: u32,
    owner: u32,
    truncated: u32,
    owner_not_python: u32,
    _pad: u32,
    code_tag_bits: u64,
}

/// One step of the walk: records the current frame and moves to the previous one. Returns 1 to
/// stop. As a `bpf_loop` callback it is verified once, however many frames are walked.
unsafe extern "C" fn walk_step(_i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let w = unsafe { &mut *(ctx as *mut Walk) };
    if w.frame == 0 {
        return 1;
    }
    if w.owner != NO_OFFSET {
        let owner: u8 =
            unsafe { bpf_probe_read_user((w.frame + w.owner as u64) as *const u8).unwrap_or(0) };
        if owner as u32 >= w.owner_not_python {
            // A shim frame of the C stack or an entry frame, not Python code.
            w.frame = read_u64(w.frame + w.back as u64);
            return 0;
        }
    }
    let Some(s) = PY_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let s = unsafe { &mut *s };
    let n = w.n as usize;
    if n >= PY_MAX_FRAMES {
        w.truncated = 1;
        return 1;
    }
    let code = read_u64(w.frame + w.code as u64) & !w.code_tag_bits;
    let instr = if w.kind == FRAMES_LEGACY {
        let v: i32 =
            unsafe { bpf_probe_read_user((w.frame + w.instr as u64) as *const i32).unwrap_or(-1) };
        v as u32 as u64
    } else {
        read_u64(w.frame + w.instr as u64)
    };
    if let Some(f) = s.frames.get_mut(n) {
        f.code = code;
        f.instr = instr;
    }
    w.h = mix(mix(w.h, code), instr);
    w.n += 1;
    w.frame = read_u64(w.frame + w.back as u64);
    0
}

/// Search of the interpreter's thread list for the current thread.
#[repr(C)]
struct ThreadSearch {
    tstate: u64,
    found: u64,
    tid: u32,
    next: u32,
    tstate_tid: u32,
    tstate_pthread: u32,
    pthread_tid: u32,
    _pad: u32,
}

unsafe extern "C" fn search_step(_i: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let s = unsafe { &mut *(ctx as *mut ThreadSearch) };
    if s.tstate == 0 {
        return 1;
    }
    let tid: u32 = if s.tstate_tid != NO_OFFSET {
        unsafe { bpf_probe_read_user((s.tstate + s.tstate_tid as u64) as *const u32).unwrap_or(0) }
    } else if s.pthread_tid != NO_OFFSET {
        let pthread = read_u64(s.tstate + s.tstate_pthread as u64);
        if pthread == 0 {
            0
        } else {
            unsafe {
                bpf_probe_read_user((pthread + s.pthread_tid as u64) as *const u32).unwrap_or(0)
            }
        }
    } else {
        return 1;
    };
    if tid == s.tid {
        s.found = s.tstate;
        return 1;
    }
    s.tstate = read_u64(s.tstate + s.next as u64);
    0
}

/// The current thread's PyThreadState.
#[inline(always)]
fn thread_state(conf: &PyConf, id: u64) -> u64 {
    if let Some(t) = unsafe { THREADS.get(id) } {
        return *t;
    }
    if conf.threads_head == 0 {
        bump(stat::PY_THREAD_UNKNOWN);
        return 0;
    }
    // Thread states hold the thread id of the process's own pid namespace (a container's).
    let tid = if conf.pidns_ino != 0 {
        let mut ns = bpf_pidns_info { pid: 0, tgid: 0 };
        let r = unsafe {
            bpf_get_ns_current_pid_tgid(
                conf.pidns_dev,
                conf.pidns_ino,
                &mut ns,
                core::mem::size_of::<bpf_pidns_info>() as u32,
            )
        };
        if r != 0 {
            bump(stat::PY_THREAD_UNKNOWN);
            return 0;
        }
        ns.pid
    } else {
        id as u32
    };
    let mut s = ThreadSearch {
        tstate: read_u64(conf.threads_head),
        found: 0,
        tid,
        next: conf.tstate_next,
        tstate_tid: conf.tstate_tid,
        tstate_pthread: conf.tstate_pthread,
        pthread_tid: conf.pthread_tid,
        _pad: 0,
    };
    unsafe {
        bpf_loop(
            256,
            search_step as *mut core::ffi::c_void,
            &mut s as *mut ThreadSearch as *mut core::ffi::c_void,
            0,
        )
    };
    if s.found == 0 {
        bump(stat::PY_THREAD_UNKNOWN);
        return 0;
    }
    let _ = THREADS.insert(id, s.found, 0);
    s.found
}

/// Walks the current thread's Python frames into `PYSTACKS`; returns the stack's key, 0 if none.
#[inline(never)]
fn py_stack(tgid: u32, id: u64) -> u64 {
    let Some(conf) = (unsafe { PYCONF.get(tgid) }) else {
        return 0;
    };
    let tstate = thread_state(conf, id);
    if tstate == 0 {
        return 0;
    }
    let mut frame = read_u64(tstate + conf.tstate_frame as u64);
    if conf.cframe_current != NO_OFFSET && frame != 0 {
        frame = read_u64(frame + conf.cframe_current as u64);
    }
    let mut w = Walk {
        frame,
        n: 0,
        h: 0xcbf29ce484222325,
        kind: conf.kind,
        code: conf.frame_code,
        back: conf.frame_back,
        instr: conf.frame_instr,
        owner: conf.frame_owner,
        truncated: 0,
        owner_not_python: conf.owner_not_python,
        _pad: 0,
        code_tag_bits: conf.code_tag_bits,
    };
    // Shim frames are skipped without counting: allow a few extra steps.
    unsafe {
        bpf_loop(
            (PY_MAX_FRAMES + 16) as u32,
            walk_step as *mut core::ffi::c_void,
            &mut w as *mut Walk as *mut core::ffi::c_void,
            0,
        )
    };
    if w.n == 0 {
        return 0;
    }
    let Some(s) = PY_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let s = unsafe { &mut *s };
    s.len = w.n as u32;
    s.truncated = w.truncated;
    let mut h = mix(w.h, w.truncated as u64);
    h ^= h >> 31;
    h = h.wrapping_mul(0x7fb5d329728ea185);
    h ^= h >> 27;
    if h == 0 {
        h = 1;
    }
    if unsafe { PYSTACKS.get(h) }.is_none() && PYSTACKS.insert(h, &*s, 0).is_err() {
        bump(stat::PYSTACK_LOST);
        return 0;
    }
    h
}

#[inline(always)]
fn alloc_entry(ctx: &ProbeContext, size: u64, old: u64) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !traced(tgid) {
        return 0;
    }
    bump(stat::ALLOC_CALLS);
    bump_pid(tgid, |s| s.alloc_calls += 1);
    let pending = PendingAlloc {
        size,
        sp: unsafe { bpf_probe_read_kernel(&(*ctx.regs).rsp).unwrap_or(0) },
        old,
        pystack: py_stack(tgid, id),
        ustack: user_stack(ctx),
        _pad: 0,
    };
    let _ = PENDING.insert(id, pending, 0);
    0
}

// All of CPython's allocator-domain functions take the domain's `ctx` pointer first.

/// `void *malloc(void *ctx, size_t size)`
#[uprobe]
pub fn malloc_enter(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(1).unwrap_or(0);
    alloc_entry(&ctx, size, 0)
}

/// `void *calloc(void *ctx, size_t nelem, size_t elsize)`
#[uprobe]
pub fn calloc_enter(ctx: ProbeContext) -> u32 {
    let n: u64 = ctx.arg(1).unwrap_or(0);
    let sz: u64 = ctx.arg(2).unwrap_or(0);
    alloc_entry(&ctx, n.wrapping_mul(sz), 0)
}

/// `void *realloc(void *ctx, void *ptr, size_t size)`
#[uprobe]
pub fn realloc_enter(ctx: ProbeContext) -> u32 {
    let old: u64 = ctx.arg(1).unwrap_or(0);
    let size: u64 = ctx.arg(2).unwrap_or(0);
    alloc_entry(&ctx, size, old)
}

/// Return of malloc, calloc and realloc.
#[uretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let pending = match unsafe { PENDING.get(id) } {
        Some(p) => *p,
        None => {
            if traced(tgid) {
                bump(stat::ALLOC_UNPAIRED);
            }
            return 0;
        }
    };
    let _ = PENDING.remove(id);
    let sp: u64 = unsafe { bpf_probe_read_kernel(&(*ctx.regs).rsp).unwrap_or(0) };
    if pending.sp.wrapping_add(8) != sp {
        // Not this call's entry (an entry armed after the call began, or a nested call).
        bump(stat::ALLOC_UNPAIRED);
        return 0;
    }
    let addr: u64 = ctx.ret();
    if addr == 0 {
        return 0;
    }
    if pending.old != 0 {
        let _ = ALLOCS.remove(AllocKey {
            pid: tgid,
            _pad: 0,
            addr: pending.old,
        });
    }
    let info = AllocInfo {
        size: pending.size,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        pystack: pending.pystack,
        ustack: pending.ustack,
        _pad: 0,
    };
    if ALLOCS
        .insert(
            AllocKey {
                pid: tgid,
                _pad: 0,
                addr,
            },
            info,
            0,
        )
        .is_err()
    {
        bump(stat::ALLOC_MAP_FULL);
    }
    0
}

/// `void free(void *ctx, void *ptr)`
#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !traced(tgid) {
        return 0;
    }
    let addr: u64 = ctx.arg(1).unwrap_or(0);
    if addr == 0 {
        return 0;
    }
    bump(stat::FREE_CALLS);
    bump_pid(tgid, |s| s.free_calls += 1);
    let _ = ALLOCS.remove(AllocKey {
        pid: tgid,
        _pad: 0,
        addr,
    });
    0
}

/// Benchmark floor: a do-nothing probe, attached where the allocator probes would be.
#[uprobe]
pub fn noop_enter(_ctx: ProbeContext) -> u32 {
    0
}

/// Benchmark floor: a do-nothing return probe.
#[uretprobe]
pub fn noop_exit(_ctx: RetProbeContext) -> u32 {
    0
}

// ---------------------------------------------------------------------------------------------
// Descriptors

// struct pt_regs (x86_64) offsets.
const REG_R10: usize = 56;
const REG_R8: usize = 72;
const REG_DX: usize = 96;
const REG_SI: usize = 104;
const REG_DI: usize = 112;
const REG_ORIG_AX: usize = 120;

#[inline(always)]
fn reg(regs: *const u8, off: usize) -> u64 {
    unsafe { bpf_probe_read_kernel(regs.add(off) as *const u64).unwrap_or(0) }
}

#[inline(always)]
fn arg(regs: *const u8, n: usize) -> u64 {
    match n {
        0 => reg(regs, REG_DI),
        1 => reg(regs, REG_SI),
        2 => reg(regs, REG_DX),
        3 => reg(regs, REG_R10),
        _ => reg(regs, REG_R8),
    }
}

#[inline(always)]
fn close_fd(tgid: u32, fd: u32) {
    if FDS.remove(FdKey { pid: tgid, fd }).is_ok() {
        bump(stat::FD_CLOSES);
        bump_pid(tgid, |s| s.fd_closes += 1);
    }
}

/// Records a new descriptor. `path` is a user pointer to a NUL-terminated string, or 0.
#[inline(always)]
fn open_fd(
    ctx: &RawTracePointContext,
    tgid: u32,
    tid: u32,
    fd: u32,
    nr: u32,
    kind: FdKind,
    a: u32,
    b: u32,
    path: u64,
    copy_from: Option<u32>,
) {
    let Some(info) = FD_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let info = unsafe { &mut *info };
    info.ts_ns = unsafe { bpf_ktime_get_ns() };
    info.ustack = user_stack(ctx);
    info.pystack = py_stack(tgid, ((tgid as u64) << 32) | tid as u64);
    info.kind = kind as u16;
    info.syscall = nr as u16;
    info.a = a;
    info.b = b;
    info.tid = tid;
    info.path[0] = 0;
    if let Some(src) = copy_from {
        // dup family: inherit what the source refers to.
        if let Some(orig) = unsafe { FDS.get(FdKey { pid: tgid, fd: src }) } {
            info.kind = orig.kind;
            info.a = orig.a;
            info.b = orig.b;
            info.path = orig.path;
        }
    } else if path != 0 {
        let _ =
            unsafe { bpf_probe_read_user_str_bytes(path as *const u8, &mut info.path[..PATH_LEN]) };
    }
    if FDS.insert(FdKey { pid: tgid, fd }, &*info, 0).is_err() {
        bump(stat::FD_MAP_FULL);
        return;
    }
    bump(stat::FD_OPENS);
    bump_pid(tgid, |s| s.fd_opens += 1);
}

/// `sys_exit(struct pt_regs *regs, long ret)`
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !traced(tgid) {
        return 0;
    }
    let tid = id as u32;
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    if ret < 0 {
        return 0;
    }
    let nr = reg(regs, REG_ORIG_AX) as u32;
    let fd = ret as u32;
    match nr {
        sys::CLOSE => close_fd(tgid, arg(regs, 0) as u32),
        sys::EXECVE | sys::EXECVEAT => {
            // A new program image: the old heap is gone, CLOEXEC descriptors are closed (the user
            // side closes the old program's entry and reconciles both). Rare enough to log.
            let now = unsafe { bpf_ktime_get_ns() };
            bump_pid(tgid, |s| {
                s.execs += 1;
                s.last_exec_ns = now;
            });
            // The old layout means nothing in the new image: stop walking with it at once (the
            // user side publishes the new program's, if it is Python).
            let _ = PYCONF.remove(&tgid);
            warn!(
                &ctx,
                "traced process {} called execve: its earlier allocations are void", tgid
            );
        }
        sys::OPEN | sys::CREAT => open_fd(
            &ctx,
            tgid,
            tid,
            fd,
            nr,
            FdKind::File,
            0,
            0,
            arg(regs, 0),
            None,
        ),
        sys::OPENAT | sys::OPENAT2 => open_fd(
            &ctx,
            tgid,
            tid,
            fd,
            nr,
            FdKind::File,
            0,
            0,
            arg(regs, 1),
            None,
        ),
        sys::OPEN_BY_HANDLE_AT => open_fd(&ctx, tgid, tid, fd, nr, FdKind::File, 0, 0, 0, None),
        sys::SOCKET => {
            let family = arg(regs, 0) as u32;
            let ty = (arg(regs, 1) as u32) & 0xf;
            open_fd(&ctx, tgid, tid, fd, nr, FdKind::Socket, family, ty, 0, None)
        }
        sys::ACCEPT | sys::ACCEPT4 => {
            // Same family and type as the listening socket.
            let listener = arg(regs, 0) as u32;
            open_fd(
                &ctx,
                tgid,
                tid,
                fd,
                nr,
                FdKind::Socket,
                0,
                0,
                0,
                Some(listener),
            )
        }
        sys::SOCKETPAIR | sys::PIPE | sys::PIPE2 => {
            let (kind, family, ty, ptr) = if nr == sys::SOCKETPAIR {
                (
                    FdKind::Socket,
                    arg(regs, 0) as u32,
                    (arg(regs, 1) as u32) & 0xf,
                    arg(regs, 3),
                )
            } else {
                (FdKind::Pipe, 0, 0, arg(regs, 0))
            };
            let fds: [i32; 2] =
                unsafe { bpf_probe_read_user(ptr as *const [i32; 2]).unwrap_or([-1, -1]) };
            if fds[0] >= 0 {
                open_fd(
                    &ctx,
                    tgid,
                    tid,
                    fds[0] as u32,
                    nr,
                    kind,
                    family,
                    ty,
                    0,
                    None,
                );
            }
            if fds[1] >= 0 {
                open_fd(
                    &ctx,
                    tgid,
                    tid,
                    fds[1] as u32,
                    nr,
                    kind,
                    family,
                    ty,
                    0,
                    None,
                );
            }
        }
        sys::DUP | sys::DUP2 | sys::DUP3 => {
            let old = arg(regs, 0) as u32;
            if nr != sys::DUP && old == fd {
                return 0; // dup2(fd, fd): no-op
            }
            // dup2/dup3 over an open descriptor closes it first.
            close_fd(tgid, fd);
            open_fd(&ctx, tgid, tid, fd, nr, FdKind::Dup, old, 0, 0, Some(old))
        }
        sys::FCNTL => {
            let cmd = arg(regs, 1);
            if cmd == sys::F_DUPFD || cmd == sys::F_DUPFD_CLOEXEC {
                let old = arg(regs, 0) as u32;
                open_fd(&ctx, tgid, tid, fd, nr, FdKind::Dup, old, 0, 0, Some(old))
            }
        }
        sys::EVENTFD | sys::EVENTFD2 => {
            open_fd(&ctx, tgid, tid, fd, nr, FdKind::Eventfd, 0, 0, 0, None)
        }
        sys::EPOLL_CREATE | sys::EPOLL_CREATE1 => {
            open_fd(&ctx, tgid, tid, fd, nr, FdKind::Epoll, 0, 0, 0, None)
        }
        sys::MEMFD_CREATE => open_fd(
            &ctx,
            tgid,
            tid,
            fd,
            nr,
            FdKind::Memfd,
            0,
            0,
            arg(regs, 0),
            None,
        ),
        sys::MEMFD_SECRET => open_fd(&ctx, tgid, tid, fd, nr, FdKind::Memfd, 0, 0, 0, None),
        sys::SIGNALFD | sys::SIGNALFD4 => {
            // signalfd on an existing signalfd (first argument >= 0) modifies it in place.
            if arg(regs, 0) as i32 == -1 {
                open_fd(&ctx, tgid, tid, fd, nr, FdKind::Signalfd, 0, 0, 0, None)
            }
        }
        sys::TIMERFD_CREATE => open_fd(&ctx, tgid, tid, fd, nr, FdKind::Timerfd, 0, 0, 0, None),
        sys::INOTIFY_INIT | sys::INOTIFY_INIT1 => {
            open_fd(&ctx, tgid, tid, fd, nr, FdKind::Inotify, 0, 0, 0, None)
        }
        sys::FANOTIFY_INIT => open_fd(&ctx, tgid, tid, fd, nr, FdKind::Fanotify, 0, 0, 0, None),
        sys::PIDFD_OPEN | sys::PIDFD_GETFD => {
            open_fd(&ctx, tgid, tid, fd, nr, FdKind::Pidfd, 0, 0, 0, None)
        }
        sys::USERFAULTFD => open_fd(&ctx, tgid, tid, fd, nr, FdKind::Userfaultfd, 0, 0, 0, None),
        sys::PERF_EVENT_OPEN => open_fd(&ctx, tgid, tid, fd, nr, FdKind::PerfEvent, 0, 0, 0, None),
        sys::IO_URING_SETUP => open_fd(&ctx, tgid, tid, fd, nr, FdKind::IoUring, 0, 0, 0, None),
        sys::CLOSE_RANGE => {
            // Close the first descriptors of the range here; the user side reconciles the rest
            // (and CLOEXEC descriptors after exec) against /proc/PID/fd.
            let first = arg(regs, 0) as u32;
            let last = arg(regs, 1) as u32;
            let flags = arg(regs, 2);
            if flags & 4 == 0 {
                // not CLOSE_RANGE_CLOEXEC
                let mut i: u32 = 0;
                while i < 64 {
                    let fd = first.wrapping_add(i);
                    if fd > last || fd < first {
                        break;
                    }
                    close_fd(tgid, fd);
                    i += 1;
                }
            }
        }
        _ => {}
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
