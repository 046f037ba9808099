//! Reading a live interpreter from outside (read-only): its thread states, and the code objects
//! behind the kernel's (code, instruction) frames, turned into `function (file.py:LINE)`.
//!
//! By concern: this file holds the runtime and its thread states (the thread-state walk); `stack`
//! reads the frames threads run, `locals` the locals of running and suspended frames, `code` the
//! code objects (names, files, bytecode and the uses it makes of a name), `lines` the line tables.

mod code;
mod lines;
mod locals;
mod stack;

pub use lines::{lnotab_line, location_line, pep626_line};

use std::collections::HashMap;
use std::sync::Arc;

use tracer_common::{PyConf, FRAMES_INTERP, FRAMES_LEGACY, NO_OFFSET};

use crate::frame::Frame;
use crate::layouts::{FrameKind, Layout};
use crate::mem::{self, i32_at, u64_at, Memory};
use crate::procfs;
use crate::strings;
use code::CodeInfo;

/// What the kernel needs to walk the frames of `pid`, an interpreter with layout `l`.
pub fn pyconf(l: &Layout, pid: u32) -> PyConf {
    let opt = |o: Option<u64>| o.map(|v| v as u32).unwrap_or(NO_OFFSET);
    let pidns = pid_namespace(pid);
    PyConf {
        kind: if l.frame_kind == FrameKind::Legacy {
            FRAMES_LEGACY
        } else {
            FRAMES_INTERP
        },
        tstate_frame: l.tstate_frame as u32,
        cframe_current: opt(l.cframe_current_frame),
        frame_code: l.frame_code as u32,
        frame_back: l.frame_back as u32,
        frame_instr: l.frame_instr as u32,
        // 3.11 has no C-stack shim frames; its owner values mean something else.
        frame_owner: match l.owner_not_python {
            Some(_) => opt(l.frame_owner),
            None => NO_OFFSET,
        },
        owner_not_python: l.owner_not_python.map(u32::from).unwrap_or(256),
        code_tag_bits: l.code_tag_bits,
        tstate_next: l.tstate_next as u32,
        threads_head: 0,
        tstate_tid: opt(l.tstate_native_thread_id),
        tstate_pthread: l.tstate_thread_id as u32,
        pthread_tid: NO_OFFSET,
        pidns_dev: pidns.0,
        pidns_ino: pidns.1,
        interp_head: 0,
        interp_threads: l.interp_threads_head as u32,
        _pad: 0,
    }
}

/// Device and inode of a process's pid namespace when it is not the host's, else (0, 0).
fn pid_namespace(pid: u32) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    if procfs::nspid(pid).is_none() {
        return (0, 0);
    }
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .map(|m| (m.dev(), m.ino()))
        .unwrap_or((0, 0))
}

/// At most this many threads of one process are read (the kernel's thread map holds 65,536 in
/// all).
const MAX_THREADS: usize = 16384;

/// A live CPython runtime in one process.
pub struct Runtime {
    pub pid: u32,
    /// The process's memory (or recorded pages of it).
    mem: Arc<dyn Memory + Send + Sync>,
    /// Thread ids and thread states given instead of listing /proc/PID/task (recorded pages).
    given_threads: Option<Vec<(u32, u64)>>,
    pub layout: &'static Layout,
    /// Runtime address of `_PyRuntime`.
    pub runtime: u64,
    /// Runtime address of `PyCode_Type`, to validate code objects.
    pub code_type: u64,
    /// glibc: offset of `tid` inside `struct pthread` (for <= 3.10, where thread states only
    /// know pthread_self()).
    pthread_tid_off: Option<u64>,
    /// The process runs in another pid namespace (a container): its thread ids differ from
    /// the kernel's.
    in_pid_namespace: bool,
    codes: HashMap<(u64, u64, u64), Option<CodeInfo>>,
    stacks: HashMap<u64, Vec<Frame>>,
    /// Labels of sampled frames by (code object, instruction).
    frame_labels: HashMap<(u64, u64), (Frame, String)>,
}

/// The outcome of checking a layout against a live process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Valid,
    /// The thread list decodes, but no thread shows a Python frame to check yet.
    ThreadsOnly,
    /// No interpreter or thread list yet (starting), or no more (finalizing).
    NotRunning,
    /// Cannot tell yet (the runtime is starting): why.
    Pending(String),
    /// The layout does not fit the process: why.
    Invalid(String),
}

/// A running frame and its local variables (name, object).
#[derive(Debug, Clone)]
pub struct FrameLocals {
    /// The function and the line it is executing (suspended at).
    pub label: Frame,
    pub function: String,
    /// The Python stack down to this frame, root first (a suspended frame: itself).
    pub stack: Vec<Frame>,
    pub locals: Vec<(String, u64)>,
    /// The frame of a suspended coroutine or generator (no thread runs it).
    pub suspended: bool,
}

impl FrameLocals {
    /// How one of its locals is named: `serve() local buf`, `suspended handle() local conns`.
    pub fn local_label(&self, name: &str) -> String {
        let state = if self.suspended { "suspended " } else { "" };
        format!("{state}{}() local {name}", self.function)
    }
}

impl Runtime {
    pub fn new(pid: u32, layout: &'static Layout, runtime: u64, code_type: u64) -> Runtime {
        Runtime::with_memory(pid, Arc::new(mem::Process(pid)), layout, runtime, code_type)
    }

    /// The same over any `Memory` (recorded pages, in tests).
    pub fn with_memory(
        pid: u32,
        mem: Arc<dyn Memory + Send + Sync>,
        layout: &'static Layout,
        runtime: u64,
        code_type: u64,
    ) -> Runtime {
        Runtime {
            pid,
            mem,
            given_threads: None,
            layout,
            runtime,
            code_type,
            pthread_tid_off: None,
            in_pid_namespace: procfs::nspid(pid).is_some(),
            codes: HashMap::new(),
            stacks: HashMap::new(),
            frame_labels: HashMap::new(),
        }
    }

    /// Replays a recording: these (thread id, thread state) pairs instead of /proc/PID/task.
    #[cfg(test)]
    pub fn set_threads(&mut self, threads: Vec<(u32, u64)>) {
        self.given_threads = Some(threads);
    }

    pub(super) fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.mem.bytes(addr, len)
    }

    pub(super) fn ptr(&self, addr: u64) -> u64 {
        self.mem.u64(addr).unwrap_or(0)
    }

    /// The kernel's walking configuration, complete with this process's thread list address.
    pub fn conf(&self) -> PyConf {
        let l = self.layout;
        let interp = self.ptr(self.runtime + l.runtime_interpreters_head);
        PyConf {
            threads_head: if interp == 0 {
                0
            } else {
                interp + l.interp_threads_head
            },
            pthread_tid: self.pthread_tid_off.map(|o| o as u32).unwrap_or(NO_OFFSET),
            interp_head: self.runtime + l.runtime_interpreters_head,
            ..pyconf(l, self.pid)
        }
    }

    /// Checks the layout against the live process before it is trusted: the interpreter's
    /// thread list decodes (a thread state's native thread id is one of the process's threads),
    /// and the threads' frame chains decode to code objects whose name and file name are str.
    pub fn validate(&mut self) -> Check {
        let l = self.layout;
        let interp = self.ptr(self.runtime + l.runtime_interpreters_head);
        if interp == 0 || self.ptr(interp + l.interp_threads_head) == 0 {
            return Check::NotRunning;
        }
        let tstates: Vec<u64> = self.threads().into_iter().map(|t| t.1).collect();
        if tstates.is_empty() {
            return Check::Pending(
                "no thread state in the interpreter's list matches a thread of the process".into(),
            );
        }
        let (mut frames, mut decoded) = (0, 0);
        for chain in self.thread_frames(&tstates) {
            for (_, code, _) in chain {
                frames += 1;
                if self.code(code).is_some() {
                    decoded += 1;
                }
            }
        }
        if frames == 0 {
            return Check::ThreadsOnly;
        }
        if decoded * 2 <= frames {
            return Check::Invalid(format!(
                "{decoded} of {frames} frames decode to code objects"
            ));
        }
        Check::Valid
    }

    /// Every thread state of the main interpreter, with the kernel thread id it runs on.
    pub fn threads(&mut self) -> Vec<(u32, u64)> {
        if let Some(t) = &self.given_threads {
            return t.clone();
        }
        let l = self.layout;
        // Thread ids as the kernel sees them, and as the process sees them (its own pid
        // namespace in a container: that is what the thread states hold).
        let host: Vec<u32> = std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let own: Vec<u32> = if self.in_pid_namespace {
            host.iter()
                .map(|&t| procfs::nspid(t).unwrap_or(t))
                .collect()
        } else {
            host.clone()
        };
        let by_own: HashMap<u32, u32> = own.iter().copied().zip(host.iter().copied()).collect();
        let mut out = Vec::new();
        for (tstate, b) in self.tstate_records() {
            let tid = match l.tstate_native_thread_id {
                Some(off) => u64_at(&b, off) as u32,
                None => self
                    .tid_of_pthread(u64_at(&b, l.tstate_thread_id), &own)
                    .unwrap_or(0),
            };
            if let Some(&h) = by_own.get(&tid).filter(|_| tid != 0) {
                out.push((h, tstate));
            }
        }
        out
    }

    /// Every thread state of the main interpreter now (its list, read from outside: a stack
    /// sample sees a thread that lives a few milliseconds, as a request thread does).
    pub fn tstates(&mut self) -> Vec<u64> {
        if let Some(t) = &self.given_threads {
            return t.iter().map(|t| t.1).collect();
        }
        self.tstate_records().into_iter().map(|(a, _)| a).collect()
    }

    /// The thread states of the main interpreter with their first bytes: one read each, in
    /// linear time however many threads there are (a service with thousands of idle threads).
    fn tstate_records(&mut self) -> Vec<(u64, Vec<u8>)> {
        let l = self.layout;
        let interp = self.ptr(self.runtime + l.runtime_interpreters_head);
        let mut tstate = self.ptr(interp + l.interp_threads_head);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        let len = 512.max(l.tstate_next as usize + 8);
        while tstate != 0 && out.len() < MAX_THREADS && seen.insert(tstate) {
            let Some(b) = self.read(tstate, len) else {
                break;
            };
            let next = u64_at(&b, l.tstate_next);
            out.push((tstate, b));
            tstate = next;
        }
        out
    }

    /// The kernel tid of a thread from its pthread_t (the address of glibc's struct pthread).
    fn tid_of_pthread(&mut self, pthread: u64, tids: &[u32]) -> Option<u32> {
        let b = self.read(pthread, 0x800)?;
        if let Some(off) = self.pthread_tid_off {
            return Some(i32_at(&b, off) as u32);
        }
        // Find the offset once: the first int in the plausible range that is one of our tids.
        let off = (0x100..0x7fc).step_by(4).find(|&o| {
            let v = i32_at(&b, o);
            v > 0 && tids.contains(&(v as u32))
        })?;
        self.pthread_tid_off = Some(off);
        Some(i32_at(&b, off) as u32)
    }

    /// A str object's text (every compact kind).
    pub(super) fn string(&self, addr: u64) -> Option<String> {
        strings::py_string(&*self.mem, self.layout, addr, 4096)
    }

    pub(super) fn bytes(&self, addr: u64) -> Option<Vec<u8>> {
        strings::py_bytes(&*self.mem, self.layout, addr)
    }
}
