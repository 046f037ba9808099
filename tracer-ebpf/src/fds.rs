//! Descriptor tracking from the `sys_exit` raw tracepoint: every descriptor-creating syscall of a
//! traced process inserts into `FDS`, keyed by (pid, fd); close/dup2/dup3 over an open fd remove
//! or replace. What each syscall does is described in `syscalls`; the syscall arguments are read
//! from the saved user registers at exit. After an exec, the previous program's entries that the
//! new program closes or replaces are kept aside (`EXEC_FDS`): the state at the exec.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        bpf_probe_read_user_str_bytes,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use aya_log_ebpf::warn;
use tracer_common::{
    stat, sys, FdKey, FdKind, ForkInfo, ForkKey, Grow, GrowKey, MapInfo, MapKey, FORK_ADOPTED,
    FORK_VFORK, PATH_LEN,
    TARGET_FOLLOW_FORKS, TARGET_HOST_PIDNS, TARGET_TRACED,
};

use crate::maps::{
    bump, bump_pid, user_stack, BREAKS, EXEC_FDS, EXEC_NS, FDS, FD_SCRATCH, FORKS, GROWS,
    MAPPINGS, PID_STATS,
    PYCONF, TARGETS, THREADS,
};
use crate::python::tracer_py_stack_fd;
use crate::syscalls::{effect, Arg, Creates, Detail, Effect, Fds, Spawn, When};

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

/// The value of a syscall argument from the saved user registers.
#[inline(always)]
fn arg(regs: *const u8, a: Arg) -> u64 {
    match a.0 {
        0 => reg(regs, REG_DI),
        1 => reg(regs, REG_SI),
        2 => reg(regs, REG_DX),
        3 => reg(regs, REG_R10),
        _ => reg(regs, REG_R8),
    }
}

/// The entry at `key` is about to be removed or replaced: when it is the previous program's
/// (older than the process's last exec), it was open at the exec, so it is kept in `EXEC_FDS`
/// until the user side has closed that program's entry.
#[inline(always)]
fn keep_for_exec(key: &FdKey) {
    let Some(exec_ns) = (unsafe { EXEC_NS.get(&key.pid) }) else {
        return;
    };
    if let Some(old) = unsafe { FDS.get(key) } {
        if old.ts_ns < *exec_ns {
            let _ = EXEC_FDS.insert(key, old, BPF_NOEXIST as u64);
        }
    }
}

#[inline(always)]
fn close_fd(tgid: u32, fd: u32) {
    let key = FdKey { pid: tgid, fd };
    keep_for_exec(&key);
    if FDS.remove(&key).is_ok() {
        bump(stat::FD_CLOSES);
        bump_pid(tgid, |s| s.fd_closes += 1);
    }
}

/// A new descriptor, ready to record.
struct NewFd {
    tgid: u32,
    tid: u32,
    fd: u32,
    syscall: u32,
    kind: FdKind,
    /// `FdInfo::a` and `FdInfo::b`.
    a: u32,
    b: u32,
    /// User pointer to a NUL-terminated path or name, or 0.
    path: u64,
    /// A descriptor whose entry, when there is one, gives the kind, `a`, `b` and path instead.
    inherit: Option<u32>,
}

/// Records a new descriptor in `FDS` with the current stacks.
#[inline(always)]
fn record_fd(ctx: &RawTracePointContext, new: &NewFd) {
    let Some(info) = FD_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let info = unsafe { &mut *info };
    info.ts_ns = unsafe { bpf_ktime_get_ns() };
    info.ustack = user_stack(ctx);
    info.pystack = tracer_py_stack_fd(new.tgid, ((new.tgid as u64) << 32) | new.tid as u64);
    info.kind = new.kind as u16;
    info.syscall = new.syscall as u16;
    info.a = new.a;
    info.b = new.b;
    info.tid = new.tid;
    info.path[0] = 0;
    if let Some(src) = new.inherit {
        if let Some(orig) = unsafe {
            FDS.get(FdKey {
                pid: new.tgid,
                fd: src,
            })
        } {
            info.kind = orig.kind;
            info.a = orig.a;
            info.b = orig.b;
            info.path = orig.path;
        }
    } else if new.path != 0 {
        let _ = unsafe {
            bpf_probe_read_user_str_bytes(new.path as *const u8, &mut info.path[..PATH_LEN])
        };
    }
    let key = FdKey {
        pid: new.tgid,
        fd: new.fd,
    };
    keep_for_exec(&key);
    if FDS.insert(key, &*info, 0).is_err() {
        bump(stat::FD_MAP_FULL);
        return;
    }
    bump(stat::FD_OPENS);
    bump_pid(new.tgid, |s| s.fd_opens += 1);
}

/// Applies the description of a descriptor-creating syscall that returned `ret` (>= 0).
#[inline(always)]
fn create(
    ctx: &RawTracePointContext,
    regs: *const u8,
    tgid: u32,
    tid: u32,
    nr: u32,
    ret: u32,
    c: &Creates,
) {
    let happened = match c.when {
        When::Always => true,
        When::MinusOne(a) => arg(regs, a) as i32 == -1,
        When::DupCommand(a) => {
            let cmd = arg(regs, a);
            cmd == sys::F_DUPFD || cmd == sys::F_DUPFD_CLOEXEC
        }
        When::NotSame(a) => arg(regs, a) as u32 != ret,
    };
    if !happened {
        return;
    }
    if c.replaces {
        close_fd(tgid, ret);
    }
    let mut new = NewFd {
        tgid,
        tid,
        fd: ret,
        syscall: nr,
        kind: c.kind,
        a: 0,
        b: 0,
        path: 0,
        inherit: None,
    };
    match c.detail {
        Detail::Nothing => {}
        Detail::Path(a) => new.path = arg(regs, a),
        Detail::Socket { family, ty } => {
            new.a = arg(regs, family) as u32;
            new.b = (arg(regs, ty) as u32) & 0xf;
        }
        Detail::Inherit(a) => new.inherit = Some(arg(regs, a) as u32),
        Detail::Dup(a) => {
            let src = arg(regs, a) as u32;
            new.a = src;
            new.inherit = Some(src);
        }
    }
    match c.fds {
        Fds::Ret => record_fd(ctx, &new),
        Fds::Pair(a) => {
            let ptr = arg(regs, a);
            let fds: [i32; 2] =
                unsafe { bpf_probe_read_user(ptr as *const [i32; 2]).unwrap_or([-1, -1]) };
            for fd in fds {
                if fd >= 0 {
                    new.fd = fd as u32;
                    record_fd(ctx, &new);
                }
            }
        }
    }
}

/// A traced process made a process (not a thread): recorded for the user side, and when the
/// parent follows forks in tracer's pid namespace, the child enters `TARGETS` at once, so that
/// a short-lived worker's descriptors are tracked from its first syscalls. A forked child has
/// its parent's memory, so the parent's Python walk and the forking thread's state are its
/// own; a vfork child has already run (and exec'd) when the parent returns, so it gets neither.
#[inline(always)]
fn forked(ctx: &RawTracePointContext, regs: *const u8, tgid: u32, id: u64, child: u32, how: Spawn) {
    let flags = match how {
        Spawn::Fork => 0,
        Spawn::Vfork => sys::CLONE_VFORK,
        Spawn::CloneFlags => arg(regs, Arg(0)),
        Spawn::Clone3Args => unsafe {
            bpf_probe_read_user(arg(regs, Arg(0)) as *const u64).unwrap_or(sys::CLONE_THREAD)
        },
    };
    if flags & sys::CLONE_THREAD != 0 {
        return;
    }
    let vfork = flags & sys::CLONE_VFORK != 0;
    let mut info = ForkInfo {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        flags: if vfork { FORK_VFORK } else { 0 },
        _pad: 0,
    };
    let parent_flags = unsafe { TARGETS.get(tgid) }.copied().unwrap_or(0);
    let follow = TARGET_FOLLOW_FORKS | TARGET_HOST_PIDNS;
    if parent_flags & follow == follow
        && TARGETS
            .insert(child, parent_flags & (TARGET_TRACED | follow), BPF_NOEXIST as u64)
            .is_ok()
    {
        info.flags |= FORK_ADOPTED;
        // Counters of an earlier process with this pid are not the child's.
        let _ = PID_STATS.remove(&child);
        let _ = EXEC_NS.remove(&child);
        if !vfork {
            if let Some(conf) = unsafe { PYCONF.get(tgid) } {
                let _ = PYCONF.insert(child, conf, 0);
            }
            if let Some(tstate) = unsafe { THREADS.get(id) } {
                let child_id = ((child as u64) << 32) | child as u64;
                let _ = THREADS.insert(child_id, tstate, 0);
            }
        }
    }
    let key = ForkKey {
        parent: tgid,
        child,
    };
    if FORKS.insert(key, info, 0).is_err() {
        bump(stat::FORK_LOST);
        warn!(
            ctx,
            "process {} forked by traced process {} not recorded: the fork map is full", child, tgid
        );
    }
}

/// The heap of a traced process grew by `bytes` (`brk`: through the program break, else through
/// a mapping), at the current stacks.
#[inline(always)]
fn grew(ctx: &RawTracePointContext, tgid: u32, id: u64, bytes: u64, brk: bool) -> (i32, u64) {
    let ustack = user_stack(ctx);
    let pystack = tracer_py_stack_fd(tgid, id);
    let key = GrowKey {
        pid: tgid,
        ustack,
        pystack,
    };
    if let Some(g) = GROWS.get_ptr_mut(&key) {
        let g = unsafe { &mut *g };
        if brk {
            g.brk_bytes += bytes;
        } else {
            g.mmap_bytes += bytes;
        }
        g.calls += 1;
    } else {
        let g = Grow {
            brk_bytes: if brk { bytes } else { 0 },
            mmap_bytes: if brk { 0 } else { bytes },
            calls: 1,
        };
        let _ = GROWS.insert(&key, &g, 0);
    }
    (ustack, pystack)
}

/// Memory calls of a traced process (rare: the allocators take memory in large steps): where
/// its heap grows, with the stacks that made it grow.
#[inline(always)]
fn memory(ctx: &RawTracePointContext, regs: *const u8, tgid: u32, id: u64, ret: u64, e: Effect) {
    const PAGE: u64 = 4096;
    match e {
        Effect::Brk => {
            match unsafe { BREAKS.get(&tgid) }.copied() {
                Some(last) if ret > last => {
                    grew(ctx, tgid, id, ret - last, true);
                }
                _ => {}
            }
            let _ = BREAKS.insert(&tgid, &ret, 0);
        }
        Effect::Mmap => {
            let len = arg(regs, Arg(1)).div_ceil(PAGE) * PAGE;
            let flags = arg(regs, Arg(3));
            let prot = arg(regs, Arg(2));
            let private_anon = flags & (sys::MAP_ANONYMOUS | sys::MAP_SHARED) == sys::MAP_ANONYMOUS;
            // Thread stacks and PROT_NONE reservations (glibc's thread arenas) are not heap.
            if !private_anon || flags & sys::MAP_STACK != 0 || prot & sys::PROT_WRITE == 0 {
                return;
            }
            let (ustack, pystack) = grew(ctx, tgid, id, len, false);
            let key = MapKey {
                pid: tgid,
                _pad: 0,
                addr: ret,
            };
            let info = MapInfo {
                len,
                ustack,
                _pad: 0,
                pystack,
            };
            let _ = MAPPINGS.insert(&key, &info, 0);
        }
        Effect::Munmap => {
            let key = MapKey {
                pid: tgid,
                _pad: 0,
                addr: arg(regs, Arg(0)),
            };
            let _ = MAPPINGS.remove(&key);
        }
        Effect::Mprotect => {
            // A thread arena's heap growing into its reservation.
            if arg(regs, Arg(2)) & sys::PROT_WRITE != 0 {
                let len = arg(regs, Arg(1)).div_ceil(PAGE) * PAGE;
                grew(ctx, tgid, id, len, false);
            }
        }
        _ => {}
    }
}

/// `sys_exit(struct pt_regs *regs, long ret)`
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let Some(&flags) = (unsafe { TARGETS.get(tgid) }) else {
        return 0;
    };
    let tid = id as u32;
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    if ret < 0 {
        return 0;
    }
    let nr = reg(regs, REG_ORIG_AX) as u32;
    let Some(effect) = effect(nr) else {
        return 0;
    };
    // A process followed only for what it starts: its forks (and, through the counters, its
    // execs), not its descriptors.
    if flags & TARGET_TRACED == 0 && !matches!(effect, Effect::Fork(_) | Effect::Exec) {
        return 0;
    }
    match effect {
        Effect::Creates(c) => create(&ctx, regs, tgid, tid, nr, ret as u32, &c),
        Effect::Close(a) => close_fd(tgid, arg(regs, a) as u32),
        Effect::CloseRange { first, last, flags } => {
            // Close the first descriptors of the range here; the user side reconciles the rest
            // (and CLOEXEC descriptors after exec) against /proc/PID/fd.
            let first = arg(regs, first) as u32;
            let last = arg(regs, last) as u32;
            if arg(regs, flags) & 4 == 0 {
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
        Effect::Brk | Effect::Mmap | Effect::Munmap | Effect::Mprotect => {
            memory(&ctx, regs, tgid, id, ret as u64, effect)
        }
        Effect::Fork(how) => {
            if ret > 0 {
                forked(&ctx, regs, tgid, id, ret as u32, how);
            }
        }
        Effect::Exec => {
            // A new program image: the old heap is gone, CLOEXEC descriptors are closed (the user
            // side closes the old program's entry and reconciles both). Rare enough to log.
            let now = unsafe { bpf_ktime_get_ns() };
            bump_pid(tgid, |s| {
                s.execs += 1;
                s.last_exec_ns = now;
            });
            let _ = EXEC_NS.insert(&tgid, &now, 0);
            // The old layout means nothing in the new image: stop walking with it at once (the
            // user side publishes the new program's, if it is Python).
            let _ = PYCONF.remove(&tgid);
            // Nor does the old break: the new program's first brk is its heap's start, not a
            // growth from the old one's (counted so, it was tens of GiB "grown" at `__brk`).
            let _ = BREAKS.remove(&tgid);
        }
    }
    0
}
