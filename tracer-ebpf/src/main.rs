//! Kernel side of tracer: the programs, split by concern.
//!
//! - `maps`: every map and the counters shared by the programs; only processes listed in
//!   `TARGETS` are tracked.
//! - `alloc`: allocator probes (uprobe at entry, uretprobe at return) on CPython's real allocator
//!   functions; outstanding blocks live in `ALLOCS`, keyed by (pid, address).
//! - `recycle`: `_Py_NewReference`, which gives a block that a free list handed out again the
//!   stack of the code that reused it.
//! - `python`: the walk of the current thread's Python frames into `PYSTACKS`.
//! - `sample`: on-CPU samples of the Python stacks (a perf event per CPU), for the census.
//! - `fds` and `syscalls`: descriptor tracking from the `sys_exit` raw tracepoint, driven by a
//!   table that says what each descriptor-creating syscall creates and where its parts come from.
#![no_std]
#![no_main]

mod alloc;
mod fds;
mod maps;
mod python;
mod recycle;
mod sample;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
