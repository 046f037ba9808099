//! A frame of a stack, typed from collection to rendering (the type lives with the decoders that
//! make it, in tracer-cpython's `frame.rs`), and the helpers the renderers read a stack with.

pub use crate::python::frame::{Frame, Marker};

/// The labels of a stack.
pub fn labels(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(Frame::to_string).collect()
}

/// The innermost line of Python source in a stack (`function (file.py:LINE)`), or its leaf.
pub fn python_line(frames: &[Frame]) -> String {
    frames
        .iter()
        .rev()
        .find(|f| f.is_source_line())
        .or_else(|| frames.last())
        .map(Frame::to_string)
        .unwrap_or_else(|| Frame::Marker(Marker::NoStack).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_line() {
        let st = vec![
            Frame::python("main", "app.py", Some(3)),
            Frame::python("_find", "<frozen importlib._bootstrap>", Some(1)),
            Frame::native("PyList_Append"),
        ];
        assert_eq!(super::python_line(&st), "main (app.py:3)");
        assert_eq!(super::python_line(&st[2..]), "PyList_Append");
        assert_eq!(super::python_line(&[]), "[no stack]");
        assert_eq!(labels(&st[..1]), vec!["main (app.py:3)".to_string()]);
    }
}
