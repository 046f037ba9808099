//! The walk of the current thread's Python frames, shared by the allocator and descriptor
//! programs: finds the thread's PyThreadState (published by the user side, or searched in the
//! interpreter's thread list), follows the frame chain with `bpf_loop` and stores the stack by
//! hash in `PYSTACKS`. The layout comes from the process's `PyConf`.

use aya_ebpf::{
    bindings::bpf_pidns_info,
    helpers::{bpf_get_ns_current_pid_tgid, bpf_loop, bpf_probe_read_user},
    maps::HashMap,
};
use tracer_common::{stat, PyConf, PyStack, FRAMES_LEGACY, NO_OFFSET, PY_MAX_FRAMES};

use crate::maps::{bump, FD_PYSTACKS, PYCONF, PYSTACKS, PY_SCRATCH, THREADS};

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

/// Thread states looked through to find the current thread's the first time it shows (then it
/// is kept in `THREADS`): a service may run thousands of threads, the main one last in the list.
const MAX_THREAD_SEARCH: u32 = 16384;

/// The current thread's PyThreadState.
#[inline(always)]
fn thread_state(conf: &PyConf, id: u64) -> u64 {
    if let Some(t) = unsafe { THREADS.get(id) } {
        return *t;
    }
    let head = if conf.threads_head != 0 {
        conf.threads_head
    } else if conf.interp_head != 0 {
        // A process whose interpreter was starting when the user side last read it.
        match read_u64(conf.interp_head) {
            0 => 0,
            interp => interp + conf.interp_threads as u64,
        }
    } else {
        0
    };
    if head == 0 {
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
        tstate: read_u64(head),
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
            MAX_THREAD_SEARCH,
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
///
/// A global BPF function (exported, see tracer/build.rs): the kernel's verifier checks it once,
/// on its own, instead of once for every place that calls it (the walk was most of the time the
/// kernel took to load tracer's programs).
#[no_mangle]
#[inline(never)]
pub extern "C" fn tracer_py_stack(tgid: u32, id: u64) -> u64 {
    py_stack_into(tgid, id, &PYSTACKS)
}

/// The same, kept in `FD_PYSTACKS`: descriptors and heap growth keep theirs in a map of their
/// own, which the stacks of millions of allocations cannot fill. Global, as `tracer_py_stack`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn tracer_py_stack_fd(tgid: u32, id: u64) -> u64 {
    py_stack_into(tgid, id, &FD_PYSTACKS)
}

/// Walks into `map`.
#[inline(always)]
fn py_stack_into(tgid: u32, id: u64, map: &HashMap<u64, PyStack>) -> u64 {
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
    if unsafe { map.get(h) }.is_none() && map.insert(h, &*s, 0).is_err() {
        bump(stat::PYSTACK_LOST);
        return 0;
    }
    h
}
