//! On-CPU samples of the Python stacks: a perf event on each CPU's clock runs this program
//! a few hundred times a second; when the running thread belongs to a process whose census
//! asks for stacks (`TARGET_SAMPLED`), its Python stack is walked and counted in `SAMPLES`.
//! Sampling CPU time (not wall time) puts the samples where the code runs: a function that
//! takes 20 us per request is seen, where a sampler of every thread from outside mostly sees
//! threads waiting.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::perf_event, programs::PerfEventContext};
use tracer_common::{SampleKey, TARGET_SAMPLED};

use crate::maps::{SAMPLES, TARGETS};
use crate::python::tracer_py_stack;

#[perf_event]
pub fn python_sample(_ctx: PerfEventContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    match unsafe { TARGETS.get(tgid) } {
        Some(flags) if flags & TARGET_SAMPLED != 0 => {}
        _ => return 0,
    }
    let stack = tracer_py_stack(tgid, id);
    if stack == 0 {
        return 0;
    }
    let key = SampleKey {
        pid: tgid,
        _pad: 0,
        stack,
    };
    match SAMPLES.get_ptr_mut(&key) {
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = SAMPLES.insert(&key, &1, 0);
        }
    }
    0
}
