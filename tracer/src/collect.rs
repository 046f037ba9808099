//! Collector: reads the kernel maps into per-process snapshots, reconciles descriptors with
//! /proc/PID/fd, notices targets that exit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracer_common::{FdInfo, FdKey, PidStats};

use crate::probes::Probes;
use crate::procfs;
use crate::python::frames::{self, Runtime};
use crate::python::Interpreter;
use crate::symbolize::Symbolizer;

/// Which native frames join the Python ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NativeMode {
    /// Only the native frames below the innermost Python frame (the C path to the allocation or
    /// syscall); all native frames when there is no Python stack.
    #[default]
    Leaf,
    All,
    None,
}

/// A traced process.
pub struct Target {
    pub pid: u32,
    pub comm: String,
    pub interp: Interpreter,
    pub attached_at: Instant,
    /// utime+stime (ticks) when tracing started.
    pub cpu_ticks_at_start: u64,
    pub cpu_ticks_last: u64,
    pub exited_after: Option<Duration>,
    /// The last snapshot taken while the process was alive.
    pub last: Option<ProcSnapshot>,
    pub uprobes: usize,
    /// Allocations before this time were voided by an exec and purged.
    pub purged_before_ns: u64,
    /// The live interpreter, once its runtime is mapped (None when its layout is unknown).
    pub runtime: Option<Runtime>,
    /// Thread ids published to the kernel, with their thread state.
    pub published: HashMap<u32, u64>,
}

/// Stack key: native stack id and Python stack key.
pub type StackKey = (i32, u64);

#[derive(Debug, Clone, Copy, Default)]
pub struct AllocGroup {
    pub bytes: u64,
    pub count: u64,
    pub oldest_ts: u64,
}

#[derive(Debug, Clone)]
pub struct OpenFd {
    pub fd: u32,
    pub info: FdInfo,
    /// readlink of /proc/PID/fd/N when it was read.
    pub target: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ProcSnapshot {
    pub allocs: HashMap<StackKey, AllocGroup>,
    pub fds: Vec<OpenFd>,
    pub stats: PidStats,
    /// Frames of every stack in this snapshot, root first (resolved while the process lives).
    pub frames: HashMap<StackKey, Vec<String>>,
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub struct Collector {
    pub probes: Probes,
    pub targets: Vec<Target>,
    pub symbolizer: Symbolizer,
    pub min_age: Duration,
    pub native: NativeMode,
    /// Walk Python frames in the kernel (off only to measure its cost).
    pub python_walk: bool,
}

impl Collector {
    pub fn new(probes: Probes, min_age: Duration) -> Collector {
        Collector {
            probes,
            targets: Vec::new(),
            symbolizer: Symbolizer::default(),
            min_age,
            native: NativeMode::Leaf,
            python_walk: true,
        }
    }

    pub fn add(&mut self, pid: u32, interp: Interpreter) -> crate::error::Result<()> {
        let uprobes = self.probes.add_target(pid, &interp)?;
        if let Some(layout) = interp.layout() {
            self.probes.set_pyconf(pid, frames::pyconf(layout))?;
        }
        let ticks = procfs::stat(pid).map(|s| s.cpu_ticks).unwrap_or(0);
        self.targets.push(Target {
            pid,
            comm: procfs::comm(pid),
            interp,
            attached_at: Instant::now(),
            cpu_ticks_at_start: ticks,
            cpu_ticks_last: ticks,
            exited_after: None,
            last: None,
            uprobes,
            purged_before_ns: 0,
            runtime: None,
            published: HashMap::new(),
        });
        self.refresh_threads();
        Ok(())
    }

    /// Publishes each live target's threads (tid -> PyThreadState) to the kernel. Cheap: a few
    /// reads of target memory per thread; run often so new threads get Python stacks quickly.
    pub fn refresh_threads(&mut self) {
        for t in self.targets.iter_mut().filter(|t| t.exited_after.is_none()) {
            let fresh = t.runtime.is_none();
            if fresh {
                let (Some(layout), Some(rt), Some(ct)) = (
                    t.interp.layout(),
                    t.interp.runtime_vaddr,
                    t.interp.code_type_vaddr,
                ) else {
                    continue;
                };
                let Some(bias) = t.interp.bias_in(t.pid) else {
                    continue;
                };
                t.runtime = Some(Runtime::new(
                    t.pid,
                    layout,
                    rt.wrapping_add(bias),
                    ct.wrapping_add(bias),
                ));
            }
            let rt = t.runtime.as_mut().unwrap();
            let now: HashMap<u32, u64> = rt.threads().into_iter().collect();
            if now.is_empty() {
                // Not initialised yet (launch mode): try again next time.
                t.runtime = None;
                continue;
            }
            if fresh && self.python_walk {
                // Now that the thread list is known, the kernel can find new threads by itself.
                let _ = self.probes.set_pyconf(t.pid, rt.conf());
            }
            if now != t.published {
                self.probes.set_threads(t.pid, &now);
                t.published = now;
            }
        }
    }

    /// Frames of one stack, root first: Python frames with the native frames chosen by `native`.
    fn frames_of(&mut self, i: usize, key: StackKey) -> Vec<String> {
        let pid = self.targets[i].pid;
        let native = self.symbolizer.native(&self.probes, pid, key.0);
        let py = match (self.probes.pystack(key.1), self.targets[i].runtime.as_mut()) {
            (Some(stack), Some(rt)) => rt.labels(key.1, &stack),
            _ => Vec::new(),
        };
        merge_frames(py, native, self.native)
    }

    pub fn all_exited(&self) -> bool {
        self.targets.iter().all(|t| t.exited_after.is_some())
    }

    /// Takes a snapshot of every live target, and retires targets that have exited (keeping their
    /// last snapshot). Returns the pids that exited since the last call.
    pub fn tick(&mut self) -> Vec<u32> {
        self.probes.flush_log();
        for t in &mut self.targets {
            let st = self.probes.pid_stats(t.pid);
            if st.last_exec_ns > t.purged_before_ns {
                self.probes.purge_allocs(t.pid, st.last_exec_ns);
                t.purged_before_ns = st.last_exec_ns;
            }
        }
        let allocs = self.probes.allocs();
        let fds = self.probes.fds();
        let now = monotonic_ns();
        let min_age = self.min_age.as_nanos() as u64;
        let mut exited = Vec::new();
        for i in 0..self.targets.len() {
            let pid = self.targets[i].pid;
            if self.targets[i].exited_after.is_some() {
                continue;
            }
            if !procfs::alive(pid) {
                let t = &mut self.targets[i];
                t.exited_after = Some(t.attached_at.elapsed());
                if t.comm == "?" || t.comm.is_empty() {
                    t.comm = "python".into();
                }
                exited.push(pid);
                t.published.clear();
                self.probes.set_threads(pid, &HashMap::new());
                self.probes.remove_target(pid);
                self.symbolizer.forget(pid);
                continue;
            }
            // Descriptors: drop entries whose descriptor is gone (close_range, exec with CLOEXEC).
            let links = procfs::fd_targets(pid).unwrap_or_default();
            let mut open = Vec::new();
            for (k, v) in fds.iter().filter(|(k, _)| k.pid == pid) {
                match links.get(&k.fd) {
                    Some(t) => {
                        if now.saturating_sub(v.ts_ns) >= min_age {
                            open.push(OpenFd {
                                fd: k.fd,
                                info: *v,
                                target: Some(t.clone()),
                            });
                        }
                    }
                    None => self
                        .probes
                        .remove_fd(&FdKey { pid, fd: k.fd }, Some(v.ts_ns)),
                }
            }
            open.sort_by_key(|f| f.fd);
            let mut groups: HashMap<StackKey, AllocGroup> = HashMap::new();
            for (_, a) in allocs.iter().filter(|(k, _)| k.pid == pid) {
                if now.saturating_sub(a.ts_ns) < min_age {
                    continue;
                }
                let g = groups.entry((a.ustack, a.pystack)).or_default();
                g.bytes += a.size;
                g.count += 1;
                if g.oldest_ts == 0 || a.ts_ns < g.oldest_ts {
                    g.oldest_ts = a.ts_ns;
                }
            }
            let mut frames = HashMap::new();
            let keys: Vec<StackKey> = groups
                .keys()
                .copied()
                .chain(open.iter().map(|f| (f.info.ustack, f.info.pystack)))
                .collect();
            for k in keys {
                if !frames.contains_key(&k) {
                    let f = self.frames_of(i, k);
                    frames.insert(k, f);
                }
            }
            let t = &mut self.targets[i];
            if let Some(st) = procfs::stat(pid) {
                t.cpu_ticks_last = st.cpu_ticks;
            }
            t.last = Some(ProcSnapshot {
                allocs: groups,
                fds: open,
                stats: self.probes.pid_stats(pid),
                frames,
            });
        }
        exited
    }
}

/// Is this native frame part of the interpreter's own machinery (where Python frames take over)?
fn is_interpreter_frame(name: &str) -> bool {
    name.starts_with('[')
        || name.contains("EvalFrame")
        || name.starts_with("_PyEval_")
        || name.starts_with("PyEval_")
        || name.starts_with("_PyObject_Vectorcall")
        || name.starts_with("_PyFunction_Vectorcall")
        || name.starts_with("PyObject_Call")
        || name.starts_with("_PyObject_Call")
        || name.starts_with("method_vectorcall")
        || name.starts_with("cfunction_")
        || name.ends_with("_Type")
}

/// Joins Python frames (root first) and native frames (root first).
pub fn merge_frames(py: Vec<String>, native: Vec<String>, mode: NativeMode) -> Vec<String> {
    if py.is_empty() {
        return match mode {
            NativeMode::None => vec!["[no Python stack]".into()],
            _ => native,
        };
    }
    let mut out = py;
    match mode {
        NativeMode::None => {}
        NativeMode::All => out.extend(native),
        NativeMode::Leaf => {
            // From the leaf up to the first interpreter frame, at most four.
            let leaf: Vec<String> = native
                .iter()
                .rev()
                .take_while(|n| !is_interpreter_frame(n))
                .take(4)
                .cloned()
                .collect();
            out.extend(leaf.into_iter().rev());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn native_frames_join_python_ones() {
        let py = v(&["main (app.py:10)", "leak (app.py:3)"]);
        let native = v(&[
            "_start",
            "_PyEval_EvalFrameDefault",
            "list_append",
            "_PyObject_Malloc",
        ]);
        assert_eq!(
            merge_frames(py.clone(), native.clone(), NativeMode::Leaf),
            v(&[
                "main (app.py:10)",
                "leak (app.py:3)",
                "list_append",
                "_PyObject_Malloc"
            ])
        );
        assert_eq!(
            merge_frames(py.clone(), native.clone(), NativeMode::None),
            py
        );
        assert_eq!(
            merge_frames(py.clone(), native.clone(), NativeMode::All).len(),
            6
        );
        assert_eq!(
            merge_frames(vec![], native.clone(), NativeMode::Leaf),
            native
        );
        assert_eq!(
            merge_frames(vec![], native, NativeMode::None),
            v(&["[no Python stack]"])
        );
        // garbage from frame-pointer-less unwinding stops the leaf part
        assert_eq!(
            merge_frames(
                py.clone(),
                v(&["PyType_Type", "_PyObject_Malloc"]),
                NativeMode::Leaf
            ),
            v(&["main (app.py:10)", "leak (app.py:3)", "_PyObject_Malloc"])
        );
    }
}
