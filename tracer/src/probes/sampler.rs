//! The on-CPU stack sampler: a perf event per CPU that records the Python stacks of the
//! processes the census asks for, while one of their containers grows.

use std::collections::HashMap;

use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::PerfEvent;
use tracer_common::{SampleKey, TARGET_SAMPLED};

use super::{load_error, read_hash, Probes};
use crate::batch;
use crate::error::{one_line, Error, Result};

/// The on-CPU stack sampler (a perf event per CPU).
const SAMPLE_PROGRAM: &str = "python_sample";
/// Its rate, per CPU (a prime: no lockstep with periodic work).
const SAMPLE_HZ: u64 = 997;

impl Probes {
    /// Has the on-CPU sampler record (or stop recording) a traced process's Python stacks.
    /// The sampler's perf events are opened the first time a process asks; an error says why
    /// it cannot run (then stacks are sampled from outside only).
    pub fn set_sampled(&mut self, pid: u32, on: bool) -> Result<()> {
        if on && !self.sampler_running {
            self.start_sampler()?;
        }
        let Some(m) = self.ebpf.map_mut("TARGETS") else {
            return Ok(());
        };
        let mut t = BpfHashMap::<&mut MapData, u32, u32>::try_from(m).map_err(load_error)?;
        if let Ok(flags) = t.get(&pid, 0) {
            let flags = if on {
                flags | TARGET_SAMPLED
            } else {
                flags & !TARGET_SAMPLED
            };
            let _ = t.insert(pid, flags, 0);
        }
        Ok(())
    }

    fn start_sampler(&mut self) -> Result<()> {
        let p: &mut PerfEvent = self
            .ebpf
            .program_mut(SAMPLE_PROGRAM)
            .ok_or_else(|| Error::Other(format!("program {SAMPLE_PROGRAM} missing")))?
            .try_into()
            .map_err(load_error)?;
        p.load().map_err(load_error)?;
        let cpus = aya::util::online_cpus()
            .map_err(|(what, e)| Error::KernelFeature(format!("{what}: {e}")))?;
        for cpu in cpus {
            p.attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(SAMPLE_HZ),
                false,
            )
            .map_err(|e| {
                Error::KernelFeature(format!(
                    "cannot open the CPU clock's perf event on cpu {cpu}: {}",
                    one_line(&e.to_string())
                ))
            })?;
        }
        self.sampler_running = true;
        Ok(())
    }

    /// Takes every on-CPU sample recorded since the last call, by process: (Python stack key,
    /// count). The map is emptied (the samples of a process that is gone with it).
    pub fn take_cpu_samples(&mut self) -> HashMap<u32, Vec<(u64, u64)>> {
        let all: HashMap<SampleKey, u64> = read_hash(self.ebpf.map("SAMPLES"));
        let keys: Vec<SampleKey> = all.keys().copied().collect();
        if !keys.is_empty() {
            batch::delete::<SampleKey, u64>(self.ebpf.map_mut("SAMPLES"), &keys);
        }
        let mut out: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
        for (k, n) in all {
            out.entry(k.pid).or_default().push((k.stack, n));
        }
        out
    }
}
