//! Reading a live interpreter from outside (read-only): its thread states, and the code objects
//! behind the kernel's (code, instruction) frames, turned into `function (file.py:LINE)`.

use std::collections::HashMap;
use std::sync::Arc;

use tracer_common::{PyConf, PyStack, FRAMES_INTERP, FRAMES_LEGACY, NO_OFFSET};

use crate::frame::{Frame, Marker};
use crate::layouts::{FrameKind, GenFrame, Layout, LineTable};
use crate::mem::{self, i32_at, u64_at, Memory};
use crate::procfs;
use crate::strings;

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

/// A live CPython runtime in one process.
/// At most this many threads of one process are read (the kernel's thread map holds 65,536 in
/// all).
const MAX_THREADS: usize = 16384;

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

/// Frames read per thread when sampling stacks from outside.
const MAX_SAMPLED_FRAMES: usize = 64;

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

#[derive(Debug, Clone)]
struct CodeInfo {
    name: String,
    filename: String,
    firstlineno: i32,
    linetable: Vec<u8>,
    /// Where instructions start (3.11+: the code object's co_code_adaptive).
    code_start: u64,
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

    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self.mem.bytes(addr, len)
    }

    fn ptr(&self, addr: u64) -> u64 {
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
    fn string(&self, addr: u64) -> Option<String> {
        strings::py_string(&*self.mem, self.layout, addr, 4096)
    }

    fn bytes(&self, addr: u64) -> Option<Vec<u8>> {
        strings::py_bytes(&*self.mem, self.layout, addr)
    }

    fn code(&mut self, addr: u64) -> Option<CodeInfo> {
        let l = self.layout;
        let span = [
            l.code_filename,
            l.code_name,
            l.code_firstlineno,
            l.code_linetable,
        ]
        .into_iter()
        .max()
        .unwrap()
            + 8;
        let b = self.read(addr, span as usize)?;
        if u64_at(&b, l.ob_type) != self.code_type {
            return None; // not a code object (stale pointer, or a non-code executable)
        }
        // Address plus immutable fields: a new code object at a recycled address is a new key.
        let key = (addr, u64_at(&b, l.code_name), u64_at(&b, l.code_filename));
        if let Some(c) = self.codes.get(&key) {
            return c.clone();
        }
        let info = (|| {
            Some(CodeInfo {
                name: self.string(u64_at(&b, l.code_name))?,
                filename: self.string(u64_at(&b, l.code_filename))?,
                firstlineno: i32_at(&b, l.code_firstlineno),
                linetable: self.bytes(u64_at(&b, l.code_linetable)).unwrap_or_default(),
                code_start: match l.code_adaptive {
                    Some(off) => addr + off,
                    None => 0,
                },
            })
        })();
        self.codes.insert(key, info.clone());
        info
    }

    /// Where a thread state's current frame pointer is (in the thread state, or in its C
    /// frame on 3.11/3.12).
    fn current_frame_slot(&self, tstate: u64) -> Option<u64> {
        let l = self.layout;
        match l.cframe_current_frame {
            None => Some(tstate + l.tstate_frame),
            Some(off) => match self.ptr(tstate + l.tstate_frame) {
                0 => None,
                cf => Some(cf + off),
            },
        }
    }

    /// The Python frames of the threads with these thread states, innermost first: (frame
    /// address, code object, the frame's first bytes). The target runs on while its frames are
    /// read: the chain is followed first, then every frame is read again in one copy with the
    /// current frame pointer, and the sample is kept only if that copy still links the same
    /// chain (one more try, else the thread gives no frames).
    fn thread_frames(&mut self, tstates: &[u64]) -> Vec<Vec<(u64, u64, Vec<u8>)>> {
        let l = self.layout;
        let span = [
            l.frame_code,
            l.frame_back,
            l.frame_instr,
            l.frame_owner.unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap()
            + 8;
        let mut out = Vec::new();
        for &tstate in tstates {
            let mut frames = Vec::new();
            for _ in 0..2 {
                if let Some(f) = self.frames_once(tstate, span) {
                    frames = f;
                    break;
                }
            }
            out.push(frames);
        }
        out
    }

    fn frames_once(&self, tstate: u64, span: u64) -> Option<Vec<(u64, u64, Vec<u8>)>> {
        let l = self.layout;
        let slot = self.current_frame_slot(tstate)?;
        let mut chain = Vec::new();
        let mut frame = self.ptr(slot);
        while frame != 0 && chain.len() < MAX_SAMPLED_FRAMES {
            chain.push(frame);
            frame = self.ptr(frame + l.frame_back);
        }
        if chain.is_empty() {
            return Some(Vec::new());
        }
        let mut parts = vec![(slot, 8)];
        parts.extend(chain.iter().map(|&f| (f, span as usize)));
        let buf = self.mem.read_many(&parts)?;
        if u64_at(&buf, 0usize) != chain[0] {
            return None;
        }
        let mut frames = Vec::new();
        for (i, &f) in chain.iter().enumerate() {
            let head = &buf[8 + i * span as usize..8 + (i + 1) * span as usize];
            let back = u64_at(head, l.frame_back);
            if chain.get(i + 1).is_some_and(|&next| next != back) {
                return None;
            }
            let owner = l.frame_owner.and_then(|o| head.get(o as usize).copied());
            let shim = matches!((l.owner_not_python, owner), (Some(n), Some(o)) if o >= n);
            if !shim {
                let code = u64_at(head, l.frame_code) & !l.code_tag_bits;
                frames.push((f, code, head.to_vec()));
            }
        }
        Some(frames)
    }

    /// The frame (function, file, line), and the function's name.
    fn frame_label(&mut self, code: u64, head: &[u8]) -> Option<(Frame, String)> {
        let l = self.layout;
        let instr = match l.frame_kind {
            FrameKind::Legacy => i32_at(head, l.frame_instr) as u32 as u64,
            _ => u64_at(head, l.frame_instr),
        };
        if let Some(v) = self.frame_labels.get(&(code, instr)) {
            return Some(v.clone());
        }
        let c = self.code(code)?;
        let label = Frame::python(&c.name, &c.filename, self.line(&c, instr));
        if self.frame_labels.len() > 100_000 {
            self.frame_labels.clear();
        }
        self.frame_labels
            .insert((code, instr), (label.clone(), c.name.clone()));
        Some((label, c.name))
    }

    /// The Python stacks (root first) the threads with these thread states are running now,
    /// read from outside (a sample: the target is not stopped).
    pub fn stacks(&mut self, tstates: &[u64]) -> Vec<Vec<Frame>> {
        let mut out = Vec::new();
        for frames in self.thread_frames(tstates) {
            let mut stack: Vec<Frame> = frames
                .iter()
                .filter_map(|(_, code, head)| self.frame_label(*code, head).map(|l| l.0))
                .collect();
            if !stack.is_empty() {
                stack.reverse();
                out.push(stack);
            }
        }
        out
    }

    /// The frames running on every thread, innermost first, with their local variables
    /// (census roots: what a long-running function keeps in its locals stays alive).
    pub fn frame_locals(&mut self) -> Vec<FrameLocals> {
        let tstates: Vec<u64> = self.threads().into_iter().map(|t| t.1).collect();
        let mut out = Vec::new();
        for frames in self.thread_frames(&tstates) {
            let labels: Vec<Option<(Frame, String)>> = frames
                .iter()
                .map(|(_, code, head)| self.frame_label(*code, head))
                .collect();
            for (i, (frame, code, _)) in frames.iter().enumerate() {
                let Some((label, function)) = labels[i].clone() else {
                    continue;
                };
                // The path to this frame, root first.
                let stack: Vec<Frame> = labels[i..]
                    .iter()
                    .rev()
                    .filter_map(|l| l.as_ref().map(|l| l.0.clone()))
                    .collect();
                if let Some(locals) = self.locals_of(*frame, *code) {
                    out.push(FrameLocals {
                        label,
                        function,
                        stack,
                        locals,
                        suspended: false,
                    });
                }
            }
        }
        out
    }

    /// The frames of suspended (or not yet started, or running: then also on a thread's
    /// stack) generators, coroutines and async generators among `gens`, with their locals:
    /// what an asyncio task keeps in its locals while it waits is alive, and no thread's stack
    /// shows it.
    pub fn suspended_locals(&mut self, gens: &[u64]) -> Vec<FrameLocals> {
        let mut out = Vec::new();
        for &gen in gens {
            let Some((frame, code, label, function)) = self.gen_frame(gen) else {
                continue;
            };
            if let Some(locals) = self.locals_of(frame, code) {
                out.push(FrameLocals {
                    stack: vec![label.clone()],
                    label,
                    function,
                    locals,
                    suspended: true,
                });
            }
        }
        out
    }

    /// Where a generator or coroutine that has not finished is suspended (its function and the
    /// line it waits at); None when it finished, or its frame cannot be read.
    pub fn suspended_at(&mut self, gen: u64) -> Option<Frame> {
        self.gen_frame(gen).map(|f| f.2)
    }

    /// A live generator's frame: (frame, code object, label, function name).
    fn gen_frame(&mut self, gen: u64) -> Option<(u64, u64, Frame, String)> {
        let l = self.layout;
        let span = [l.frame_code, l.frame_instr].into_iter().max().unwrap() + 8;
        let frame = match l.gen_frame {
            GenFrame::Pointer(off) => self.ptr(gen + off),
            GenFrame::Inline {
                frame,
                state,
                dead_from,
            } => {
                let state = self.read(gen + state, 1).map(|b| b[0] as i8);
                if state.is_none_or(|s| s >= dead_from) {
                    return None; // finished or cleared
                }
                gen + frame
            }
        };
        if frame == 0 {
            return None;
        }
        let head = self.read(frame, span as usize)?;
        let code = u64_at(&head, l.frame_code) & !l.code_tag_bits;
        let (label, function) = self.frame_label(code, &head)?;
        Some((frame, code, label, function))
    }

    /// A frame's local variables (name, object).
    fn locals_of(&mut self, frame: u64, code: u64) -> Option<Vec<(String, u64)>> {
        let l = self.layout;
        let n = i32_at(&self.read(code + l.code_nlocals, 4)?, 0usize);
        if !(0..=1024).contains(&n) {
            return None;
        }
        let n = n as usize;
        let names = self.ptr(code + l.code_localnames);
        let names = self.read(names + l.tuple_items, 8 * n)?;
        let values = self.read(frame + l.frame_localsplus, 8 * n)?;
        let kinds = match l.code_localkinds {
            Some(off) => self.bytes(self.ptr(code + off)).unwrap_or_default(),
            None => Vec::new(),
        };
        let mut locals = Vec::new();
        for i in 0..n {
            let mut v = u64_at(&values, 8 * i as u64);
            if v == 0 {
                continue;
            }
            // A cell or free variable: the slot holds a cell (ob_ref after the header).
            if kinds.get(i).is_some_and(|k| k & 0xc0 != 0) {
                v = self.ptr(v + l.cell_ref);
                if v == 0 {
                    continue;
                }
            }
            if let Some(name) = self.string(u64_at(&names, 8 * i as u64)) {
                locals.push((name, v));
            }
        }
        Some(locals)
    }

    /// The lines of a code object that load the global `name` (LOAD_GLOBAL and its specialized
    /// forms), as frames (function, file, line).
    /// Does a function add to containers anywhere: a store into a subscript (`d[k] = v`), or
    /// a call of a method named like one that adds (`append`, `add`, `update`...)? None: its
    /// code cannot be read. A function that does neither only reads the containers it names
    /// (`asyncio.all_tasks` iterating the task registry): it does not feed them.
    pub fn adds_to_containers(&mut self, code: u64) -> Option<bool> {
        const ADDERS: [&str; 11] = [
            "append",
            "add",
            "extend",
            "insert",
            "update",
            "setdefault",
            "appendleft",
            "extendleft",
            "put",
            "put_nowait",
            "__setitem__",
        ];
        let l = self.layout;
        for name in self.names(code)? {
            if self
                .string(name)
                .is_some_and(|s| ADDERS.contains(&s.as_str()))
            {
                return Some(true);
            }
        }
        let bytecode = self.bytecode(code)?;
        let stores = instructions(l, &bytecode).any(|(_, op, _)| l.op_store_subscr.contains(&op));
        Some(stores)
    }

    /// A code object's `co_names` (the string objects).
    fn names(&mut self, code: u64) -> Option<Vec<u64>> {
        let l = self.layout;
        let names = self.ptr(code + l.code_names);
        let n = self.ptr(names + l.var_size);
        if names == 0 || n > 4096 {
            return None;
        }
        let items = self.read(names + l.tuple_items, 8 * n as usize)?;
        Some((0..n).map(|i| u64_at(&items, 8 * i)).collect())
    }

    /// A code object's bytecode (3.11+: the adaptive copy the interpreter runs).
    fn bytecode(&mut self, code: u64) -> Option<Vec<u8>> {
        let l = self.layout;
        match (l.code_code, l.code_adaptive) {
            (Some(off), _) => self.bytes(self.ptr(code + off)),
            (None, Some(adaptive)) => {
                let units = self.ptr(code + l.var_size);
                (units <= 1 << 20)
                    .then(|| self.read(code + adaptive, 2 * units as usize))
                    .flatten()
            }
            _ => None,
        }
    }

    /// The file of a code object.
    pub fn code_file(&mut self, code: u64) -> Option<String> {
        self.code(code).map(|c| c.filename)
    }

    pub fn global_uses(&mut self, code: u64, name: &str) -> Vec<Frame> {
        let l = self.layout;
        if l.op_load_global.is_empty() {
            return Vec::new();
        }
        let ops: Vec<(u8, u8)> = l
            .op_load_global
            .iter()
            .map(|&op| (op, l.global_arg_shift))
            .collect();
        self.name_uses(code, &ops, |rt, name_obj| {
            rt.string(name_obj).as_deref() == Some(name)
        })
    }

    /// The lines of a code object that load an attribute named by the string object `key`
    /// (interned: an attribute's name in `co_names` is the same object as the key of the dicts
    /// that hold the attribute). Module code is left out: it ran at import (and
    /// its frame is the root of the main thread's every stack). A version without an opcode
    /// table gives the function without a line (the line then comes from the stacks sampled
    /// in it).
    pub fn attr_uses(&mut self, code: u64, key: u64) -> Vec<Frame> {
        let ops = self.layout.op_attr.with_shifts();
        let uses = self.name_uses(code, &ops, |_, name_obj| name_obj == key);
        uses.into_iter()
            .filter(|f| !matches!(f, Frame::Python { function, .. } if function == "<module>"))
            .collect()
    }

    /// The lines of `code` where one of `ops` (opcode, shift from its argument to its co_names
    /// index) names the co_names entry that `is_name` accepts (no ops: the function, without a
    /// line, if its co_names has it).
    fn name_uses(
        &mut self,
        code: u64,
        ops: &[(u8, u8)],
        is_name: impl Fn(&Runtime, u64) -> bool,
    ) -> Vec<Frame> {
        let l = self.layout;
        let names = self.names(code).unwrap_or_default();
        let Some(index) = (0..names.len()).find(|&i| is_name(self, names[i])) else {
            return Vec::new();
        };
        let Some(info) = self.code(code) else {
            return Vec::new();
        };
        if ops.is_empty() {
            return vec![Frame::python(&info.name, &info.filename, None)];
        }
        let mut out = Vec::new();
        let bytecode = self.bytecode(code).unwrap_or_default();
        for (i, op, arg) in instructions(l, &bytecode) {
            if !ops
                .iter()
                .any(|&(o, shift)| o == op && arg >> shift == index as u64)
            {
                continue;
            }
            let line = match l.line_table {
                LineTable::Lnotab => lnotab_line(&info.linetable, info.firstlineno, 2 * i as i32),
                LineTable::Pep626 => pep626_line(&info.linetable, info.firstlineno, 2 * i as i32),
                LineTable::Locations => location_line(&info.linetable, info.firstlineno, i),
            };
            if let Some(line) = line {
                let label = Frame::python(&info.name, &info.filename, Some(line));
                if !out.contains(&label) {
                    out.push(label);
                }
            }
        }
        out
    }

    /// The frames of a kernel Python stack, root first, cached by its key.
    pub fn labels(&mut self, key: u64, stack: &PyStack) -> Vec<Frame> {
        if let Some(v) = self.stacks.get(&key) {
            return v.clone();
        }
        let n = (stack.len as usize).min(stack.frames.len());
        let mut out: Vec<Frame> = Vec::with_capacity(n + 1);
        if stack.truncated != 0 {
            out.push(Frame::Marker(Marker::Truncated));
        }
        for f in stack.frames[..n].iter().rev() {
            out.push(match self.code(f.code) {
                Some(c) => Frame::python(&c.name, &c.filename, self.line(&c, f.instr)),
                None => Frame::Marker(Marker::UnknownPython),
            });
        }
        // A cache: kept bounded however many distinct stacks a long recording sees.
        if self.stacks.len() >= 65536 {
            self.stacks.clear();
        }
        self.stacks.insert(key, out.clone());
        out
    }

    fn line(&self, c: &CodeInfo, instr: u64) -> Option<i32> {
        let l = self.layout;
        match l.line_table {
            LineTable::Lnotab => lnotab_line(&c.linetable, c.firstlineno, instr as u32 as i32),
            LineTable::Pep626 => pep626_line(
                &c.linetable,
                c.firstlineno,
                (instr as u32 as i32).saturating_mul(2),
            ),
            LineTable::Locations => {
                if instr < c.code_start {
                    return None;
                }
                let mut index = (instr - c.code_start) / 2;
                // 3.13+: the instr_ptr of a calling frame already points past the call.
                if l.instr_after_call && index > 0 {
                    index -= 1;
                }
                location_line(&c.linetable, c.firstlineno, index as usize)
            }
        }
    }
}

/// The instructions of a code object's bytecode: (index of its code unit, opcode, argument
/// with its EXTENDED_ARG prefixes), the inline cache units after each skipped.
fn instructions<'a>(
    l: &'static Layout,
    bytecode: &'a [u8],
) -> impl Iterator<Item = (usize, u8, u64)> + 'a {
    let mut i = 0;
    let mut ext = 0u64;
    std::iter::from_fn(move || loop {
        let unit = bytecode.get(2 * i..2 * i + 2)?;
        let at = i;
        let (op, arg) = (unit[0], ext << 8 | unit[1] as u64);
        let caches = l
            .op_caches
            .iter()
            .find(|c| (c.0..=c.1).contains(&op))
            .map_or(0, |c| c.2 as usize);
        i += 1 + caches;
        if op == l.op_extended_arg {
            ext = arg;
            continue;
        }
        ext = 0;
        return Some((at, op, arg));
    })
}

/// 3.8/3.9 co_lnotab: (byte offset increment, signed line increment) pairs.
pub fn lnotab_line(tab: &[u8], first: i32, lasti: i32) -> Option<i32> {
    if lasti < 0 {
        return None;
    }
    let mut line = first;
    let mut addr = 0i32;
    for pair in tab.chunks_exact(2) {
        addr += pair[0] as i32;
        if addr > lasti {
            break;
        }
        line += pair[1] as i8 as i32;
    }
    Some(line)
}

/// 3.10 co_linetable (PEP 626): (byte length, signed line delta; -128 = no line) pairs.
pub fn pep626_line(tab: &[u8], first: i32, offset: i32) -> Option<i32> {
    if offset < 0 {
        return None;
    }
    let mut line = first;
    let mut start = 0i32;
    for pair in tab.chunks_exact(2) {
        let end = start + pair[0] as i32;
        let delta = pair[1] as i8;
        if delta != -128 {
            line += delta as i32;
        }
        if offset >= start && offset < end {
            return (delta != -128).then_some(line);
        }
        start = end;
    }
    None
}

/// 3.11+ location table: entries covering (n & 7) + 1 code units each.
pub fn location_line(tab: &[u8], first: i32, index: usize) -> Option<i32> {
    let mut p = 0usize;
    let mut line = first;
    let mut unit = 0usize;
    let varint = |p: &mut usize| -> u32 {
        let mut v = 0u32;
        let mut shift = 0;
        while let Some(&b) = tab.get(*p) {
            *p += 1;
            v |= ((b & 63) as u32) << shift;
            shift += 6;
            if b & 64 == 0 {
                break;
            }
        }
        v
    };
    let svarint = |p: &mut usize| -> i32 {
        let v = varint(p);
        if v & 1 != 0 {
            -((v >> 1) as i32)
        } else {
            (v >> 1) as i32
        }
    };
    while p < tab.len() {
        let head = tab[p];
        p += 1;
        let code = (head >> 3) & 15;
        let len = (head & 7) as usize + 1;
        let has_line = match code {
            15 => false,
            14 => {
                line += svarint(&mut p);
                varint(&mut p);
                varint(&mut p);
                varint(&mut p);
                true
            }
            13 => {
                line += svarint(&mut p);
                true
            }
            10..=12 => {
                line += (code - 10) as i32;
                p += 2;
                true
            }
            _ => {
                p += 1;
                true
            }
        };
        if index >= unit && index < unit + len {
            return has_line.then_some(line);
        }
        unit += len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnotab() {
        // line 10 at 0; +6 bytes -> line 11; +4 bytes -> line 13; negative delta -> line 12
        let tab = [6u8, 1, 4, 2, 8, (-1i8) as u8];
        assert_eq!(lnotab_line(&tab, 10, 0), Some(10));
        assert_eq!(lnotab_line(&tab, 10, 5), Some(10));
        assert_eq!(lnotab_line(&tab, 10, 6), Some(11));
        assert_eq!(lnotab_line(&tab, 10, 10), Some(13));
        assert_eq!(lnotab_line(&tab, 10, 18), Some(12));
        assert_eq!(lnotab_line(&tab, 10, -1), None);
    }

    #[test]
    fn pep626() {
        // [0,4): line 5 (+0 from first=5); [4,10): line 7; [10,12): no line; [12,14): line 8
        let tab = [4u8, 0, 6, 2, 2, 0x80, 2, 1];
        assert_eq!(pep626_line(&tab, 5, 0), Some(5));
        assert_eq!(pep626_line(&tab, 5, 4), Some(7));
        assert_eq!(pep626_line(&tab, 5, 9), Some(7));
        assert_eq!(pep626_line(&tab, 5, 10), None);
        assert_eq!(pep626_line(&tab, 5, 12), Some(8));
        assert_eq!(pep626_line(&tab, 5, 14), None);
    }

    #[test]
    fn locations() {
        // entry 1: no-columns (13), 1 unit, line +1  -> 0b1_1101_000 = 0xe8, svarint(+1)=2
        // entry 2: short form (0), 3 units, same line -> 0b1_0000_010 = 0x82, one column byte
        // entry 3: one-line form code 12 (+2 lines), 2 units -> 0b1_1100_001 = 0xe1, two bytes
        // entry 4: long form (14), 1 unit, line -3 -> 0xf0, svarint(-3)=7, end, col, endcol
        // entry 5: no location (15), 2 units -> 0xf9
        let tab = [0xe8, 2, 0x82, 5, 0xe1, 1, 9, 0xf0, 7, 0, 1, 1, 0xf9];
        assert_eq!(location_line(&tab, 20, 0), Some(21));
        assert_eq!(location_line(&tab, 20, 1), Some(21));
        assert_eq!(location_line(&tab, 20, 3), Some(21));
        assert_eq!(location_line(&tab, 20, 4), Some(23));
        assert_eq!(location_line(&tab, 20, 5), Some(23));
        assert_eq!(location_line(&tab, 20, 6), Some(20));
        assert_eq!(location_line(&tab, 20, 7), None);
        assert_eq!(location_line(&tab, 20, 9), None);
    }
}

#[cfg(test)]
mod bytecode_tests {
    use super::*;

    #[test]
    fn cache_units_are_not_instructions() {
        let l = super::super::layouts::layout_for(3, 12).unwrap();
        // LOAD_GLOBAL 1 (4 cache units, one of which reads as STORE_SUBSCR), EXTENDED_ARG 1,
        // LOAD_ATTR 2 (9 cache units), STORE_SUBSCR (1 cache unit), RETURN_CONST 0.
        let mut code = vec![116, 1, 60, 0, 60, 0, 0, 0, 0, 0];
        code.extend([144, 1, 106, 2]);
        code.extend([0; 18]);
        code.extend([60, 0, 0, 0, 121, 0]);
        let ins: Vec<(usize, u8, u64)> = instructions(l, &code).collect();
        assert_eq!(
            ins,
            vec![(0, 116, 1), (6, 106, 0x102), (16, 60, 0), (18, 121, 0)]
        );
        // 3.8-3.10 have no cache units: every unit is an instruction.
        let l = super::super::layouts::layout_for(3, 9).unwrap();
        assert_eq!(instructions(l, &[60, 0, 60, 0]).count(), 2);
    }
}
