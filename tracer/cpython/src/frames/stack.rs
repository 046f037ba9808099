//! The frames threads run, read from outside: each thread's frame chain (checked against a
//! second, consistent copy), labelled `function (file:LINE)`; and the kernel's stacks labelled.

use tracer_common::PyStack;

use super::code::CodeInfo;
use super::lines::{lnotab_line, location_line, pep626_line};
use super::Runtime;
use crate::frame::{Frame, Marker};
use crate::layouts::{FrameKind, LineTable};
use crate::mem::{i32_at, u64_at};

/// Frames read per thread when sampling stacks from outside.
const MAX_SAMPLED_FRAMES: usize = 64;

impl Runtime {
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
    pub(super) fn thread_frames(&mut self, tstates: &[u64]) -> Vec<Vec<(u64, u64, Vec<u8>)>> {
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
    pub(super) fn frame_label(&mut self, code: u64, head: &[u8]) -> Option<(Frame, String)> {
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

    pub(super) fn line(&self, c: &CodeInfo, instr: u64) -> Option<i32> {
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
