//! Objects recycled by CPython's free lists. A list, dict, tuple, float (and more) taken from a
//! free list never passes through the allocator, so its block in `ALLOCS` keeps the stack of the
//! code that first allocated it (often transient code: a JSON encoder's lists). Every object
//! creation calls `_Py_NewReference(op)`; this probe gives a block that is already outstanding
//! the stack and time of its new object, as tracemalloc does. Dicts' keys tables have a free
//! list of their own (no object, no `_Py_NewReference`): the return of `new_keys_object` does the
//! same for them (3.8 inlines `_Py_NewReference`: there the return of the constructors that use
//! free lists does it); `free_keys_object`, where a table enters that free list, marks its block
//! free-listed (not outstanding: the user side skips it), so that a table taken again through a
//! path that inlines `new_keys_object` is missed rather than put on the line that freed it.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{uprobe, uretprobe},
    programs::{tracing::StackIdContext, ProbeContext, RetProbeContext},
};
use tracer_common::{stat, AllocKey, ALLOC_FREE_LISTED};

use crate::maps::{bump, traced, user_stack, ALLOCS, FRESH};
use crate::python::tracer_py_stack;

/// A gc-tracked object sits after its 16-byte `PyGC_Head` (3.8-3.13 release builds): the block
/// the allocator returned starts there. Free-listed lists, dicts and tuples are gc-tracked.
const GC_HEAD: u64 = 16;

/// `void _Py_NewReference(PyObject *op)`
#[uprobe]
pub fn new_reference(ctx: ProbeContext) -> u32 {
    let op: u64 = ctx.arg(0).unwrap_or(0);
    created(&ctx, op)
}

/// Return of a constructor that takes its objects from a free list (3.8, where
/// `_Py_NewReference` is a header inline: `PyList_New`, `PyTuple_New`, `PyFloat_FromDouble`,
/// `new_dict`).
#[uretprobe]
pub fn new_object_exit(ctx: RetProbeContext) -> u32 {
    let op: u64 = ctx.ret();
    created(&ctx, op)
}

/// Object `op` was just created: if its block is outstanding from an earlier life, it takes
/// the current stacks.
#[inline(always)]
fn created<C: StackIdContext>(ctx: &C, op: u64) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if op == 0 {
        return 0;
    }
    // Fast path: the object of the allocation this thread just made (its block starts at the
    // object or at its gc header, or the pre-header of a 3.11+ instance): its stack is current.
    if let Some(f) = FRESH.get_ptr_mut(0) {
        let [fid, faddr] = unsafe { *f };
        if fid == id && faddr <= op && op.wrapping_sub(faddr) <= 2 * GC_HEAD {
            return 0;
        }
    }
    if !traced(tgid) {
        return 0;
    }
    // A block never starts 16 bytes before a non-gc object (pymalloc's size classes and
    // glibc's chunks are larger), so the gc header is tried first, then the object itself.
    let mut key = AllocKey {
        pid: tgid,
        _pad: 0,
        addr: op.wrapping_sub(GC_HEAD),
    };
    let mut slot = ALLOCS.get_ptr_mut(&key);
    if slot.is_none() {
        key.addr = op;
        slot = ALLOCS.get_ptr_mut(&key);
    }
    if let Some(info) = slot {
        reattribute(ctx, id, tgid, info);
    }
    0
}

/// Return of `new_keys_object` (a dict's keys table, maybe from the keys free list).
#[uretprobe]
pub fn new_keys_exit(ctx: RetProbeContext) -> u32 {
    let keys: u64 = ctx.ret();
    keys_taken(&ctx, keys)
}

/// `PyDictObject.ma_keys` (3.8-3.13).
const MA_KEYS: u64 = 32;

/// Return of `_PyDict_FromItems` (3.13, which inlines where keys tables enter the free list):
/// the new dict's keys table, made for it, takes the current stacks.
#[uretprobe]
pub fn dict_items_exit(ctx: RetProbeContext) -> u32 {
    let dict: u64 = ctx.ret();
    // Other processes of the same interpreter file hit this probe too: no read for them.
    if dict == 0 || !traced((bpf_get_current_pid_tgid() >> 32) as u32) {
        return 0;
    }
    let keys: u64 =
        unsafe { aya_ebpf::helpers::bpf_probe_read_user((dict + MA_KEYS) as *const u64) }
            .unwrap_or(0);
    keys_taken(&ctx, keys)
}

/// Keys table `keys` was just handed to a dict: unless it is the block this thread just
/// allocated (its stack is current), an outstanding block takes the current stacks.
#[inline(always)]
fn keys_taken<C: StackIdContext>(ctx: &C, keys: u64) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if keys == 0 {
        return 0;
    }
    if let Some(f) = FRESH.get_ptr_mut(0) {
        if unsafe { *f } == [id, keys] {
            return 0;
        }
    }
    if !traced(tgid) {
        return 0;
    }
    let key = AllocKey {
        pid: tgid,
        _pad: 0,
        addr: keys,
    };
    if let Some(info) = ALLOCS.get_ptr_mut(&key) {
        reattribute(ctx, id, tgid, info);
    }
    0
}

/// `free_keys_object(keys)` (3.8-3.11).
#[uprobe]
pub fn free_keys_arg0(ctx: ProbeContext) -> u32 {
    free_keys(ctx.arg(0).unwrap_or(0))
}

/// `free_keys_object(interp, keys)` (3.12).
#[uprobe]
pub fn free_keys_arg1(ctx: ProbeContext) -> u32 {
    free_keys(ctx.arg(1).unwrap_or(0))
}

/// A keys table is freed or kept in the keys free list: its block is not outstanding either
/// way (a real free removes it next, in the free probe).
#[inline(always)]
fn free_keys(keys: u64) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if keys == 0 || !traced(tgid) {
        return 0;
    }
    let key = AllocKey {
        pid: tgid,
        _pad: 0,
        addr: keys,
    };
    if let Some(info) = ALLOCS.get_ptr_mut(&key) {
        unsafe { (*info).flags |= ALLOC_FREE_LISTED };
    }
    0
}

/// Gives an outstanding block the current stacks and time.
#[inline(always)]
fn reattribute<C: StackIdContext>(
    ctx: &C,
    id: u64,
    tgid: u32,
    info: *mut tracer_common::AllocInfo,
) {
    let pystack = tracer_py_stack(tgid, id);
    let ustack = user_stack(ctx);
    unsafe {
        (*info).pystack = pystack;
        (*info).ustack = ustack;
        (*info).ts_ns = bpf_ktime_get_ns();
        (*info).flags &= !ALLOC_FREE_LISTED;
    }
    bump(stat::RECYCLED);
}
