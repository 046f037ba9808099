//! A stack's frames: the Python frames the kernel recorded, read through the process (or its
//! parent, for a forked child), joined with its native frames as `--native` says.

use super::Collector;
use crate::config::NativeMode;
use crate::frame::{Frame, Marker};
use crate::snapshot::StackKey;

impl Collector {
    /// Frames of one stack, root first: Python frames with the native frames chosen by `native`.
    /// A forked child not read yet (or gone) has its Python frames read through its parent,
    /// whose image it ran.
    pub(super) fn frames_of(&mut self, i: usize, key: StackKey) -> Vec<Frame> {
        self.frames_read(i, key, false)
    }

    /// `frames_of`, for a process that is `gone` or not.
    pub(super) fn frames_read(&mut self, i: usize, key: StackKey, gone: bool) -> Vec<Frame> {
        let pid = self.targets[i].pid;
        let native = self.symbolizer.native(&self.probes, pid, key.0);
        let parent = self.targets[i].forked_from.and_then(|parent| {
            self.targets.iter().position(|t| {
                t.pid == parent && t.exited_after.is_none() && t.threads.runtime.is_some()
            })
        });
        let reader = match (gone, self.targets[i].threads.runtime.is_some()) {
            (true, _) | (false, false) => parent.or(Some(i)),
            (false, true) => Some(i),
        };
        let py = match (
            self.probes.pystack(key.1),
            reader.and_then(|r| self.targets[r].threads.runtime.as_mut()),
        ) {
            (Some(stack), Some(rt)) => rt.labels(key.1, &stack),
            _ => Vec::new(),
        };
        merge_frames(py, native, self.native)
    }
}

/// Is this native frame part of the interpreter's own machinery (where Python frames take over)?
fn is_interpreter_frame(frame: &Frame) -> bool {
    let Frame::Native { symbol: Some(name) } = frame else {
        return true; // unknown
    };
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
}

/// Joins Python frames (root first) and native frames (root first).
pub fn merge_frames(py: Vec<Frame>, native: Vec<Frame>, mode: NativeMode) -> Vec<Frame> {
    if py.is_empty() {
        return match mode {
            NativeMode::None => vec![Frame::Marker(Marker::NoPythonStack)],
            _ => native,
        };
    }
    let mut out = py;
    match mode {
        NativeMode::None => {}
        NativeMode::All => out.extend(native),
        NativeMode::Leaf => {
            // From the leaf up to the first interpreter frame, at most four.
            let leaf: Vec<Frame> = native
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

    fn v(s: &[&str]) -> Vec<Frame> {
        s.iter().map(|x| Frame::native(x)).collect()
    }

    #[test]
    fn native_frames_join_python_ones() {
        let py = vec![
            Frame::python("main", "app.py", Some(10)),
            Frame::python("leak", "app.py", Some(3)),
        ];
        let native = v(&[
            "_start",
            "_PyEval_EvalFrameDefault",
            "list_append",
            "_PyObject_Malloc",
        ]);
        assert_eq!(
            merge_frames(py.clone(), native.clone(), NativeMode::Leaf),
            [py.clone(), v(&["list_append", "_PyObject_Malloc"])].concat()
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
            vec![Frame::Marker(Marker::NoPythonStack)]
        );
    }
}
