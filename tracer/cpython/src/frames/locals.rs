//! The local variables of frames (census roots): of the frames threads run, and of suspended
//! generators and coroutines (what an asyncio task keeps while it waits).

use super::{FrameLocals, Runtime};
use crate::frame::Frame;
use crate::layouts::GenFrame;
use crate::mem::{i32_at, u64_at};

impl Runtime {
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
            if kinds.get(i).is_some_and(|k| k & l.local_cell_kinds != 0) {
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
}
