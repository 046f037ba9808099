//! Allocator probes on CPython's allocator-domain functions: the entry probe saves the call's
//! size, stacks and stack pointer in `PENDING`; the return probe of the same call records the
//! block in `ALLOCS`, keyed by (pid, address). Frees delete. Nested calls (pymalloc falling back
//! to the raw domain) return the same address, so a block is counted once.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{stat, AllocInfo, AllocKey, PendingAlloc};

use crate::maps::{bump, bump_pid, traced, user_stack, ALLOCS, FRESH, PENDING};
use crate::python::tracer_py_stack;

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
        pystack: tracer_py_stack(tgid, id),
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
        flags: 0,
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
    } else if let Some(f) = FRESH.get_ptr_mut(0) {
        // `recycle::new_reference` of the object created in this block skips it.
        unsafe { *f = [id, addr] };
    }
    0
}

/// `void free(void *ctx, void *ptr)`
#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    free_block(ctx.arg(1).unwrap_or(0))
}

#[inline(always)]
fn free_block(addr: u64) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !traced(tgid) || addr == 0 {
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

// libc's own malloc family (exact mode): what extensions and libraries take from malloc
// without CPython's allocator (numpy's array data, a C extension's buffers). A call nested in
// CPython's raw domain returns the same address: the block is recorded once, with the innermost
// call's stack (its native frames show both).

/// `void *malloc(size_t size)`
#[uprobe]
pub fn libc_malloc_enter(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(0).unwrap_or(0);
    alloc_entry(&ctx, size, 0)
}

/// `void *calloc(size_t nelem, size_t elsize)`
#[uprobe]
pub fn libc_calloc_enter(ctx: ProbeContext) -> u32 {
    let n: u64 = ctx.arg(0).unwrap_or(0);
    let sz: u64 = ctx.arg(1).unwrap_or(0);
    alloc_entry(&ctx, n.wrapping_mul(sz), 0)
}

/// `void *realloc(void *ptr, size_t size)`
#[uprobe]
pub fn libc_realloc_enter(ctx: ProbeContext) -> u32 {
    let old: u64 = ctx.arg(0).unwrap_or(0);
    let size: u64 = ctx.arg(1).unwrap_or(0);
    alloc_entry(&ctx, size, old)
}

/// `void *aligned_alloc(size_t alignment, size_t size)`, `memalign` alike.
#[uprobe]
pub fn libc_aligned_enter(ctx: ProbeContext) -> u32 {
    let size: u64 = ctx.arg(1).unwrap_or(0);
    alloc_entry(&ctx, size, 0)
}

/// `void free(void *ptr)`
#[uprobe]
pub fn libc_free_enter(ctx: ProbeContext) -> u32 {
    free_block(ctx.arg(0).unwrap_or(0))
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
