//! A frame of a stack, typed from collection to rendering: a Python function at a line, a native
//! function, what a descriptor refers to, the process (and container) a stack belongs to, or a
//! marker for what could not be read. Its label text (`function (file:LINE)`...) is made here,
//! by `Display`, and nowhere else; nothing reads a label back. The decoders make the Python
//! frames and the markers; tracer's collector and reports carry them (its `frame.rs` re-exports
//! them).

use std::cmp::Ordering;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Frame {
    /// A Python function and the line it runs (None: the line table did not say).
    Python {
        function: String,
        file: String,
        line: Option<i32>,
    },
    /// A native function by its symbol (None: not symbolized).
    Native {
        symbol: Option<String>,
    },
    /// What a descriptor refers to: its kind without a name (`file`, `memfd`, `pipe`,
    /// `socket inet/tcp`...) and, for the kinds that have one, the name (a path).
    Resource {
        kind: String,
        name: Option<String>,
    },
    /// The process a stack belongs to (`before_exec`: the entry of a program replaced by an
    /// exec, numbered when the pid replaced several: 1 for its first program, 2 for the next).
    Process {
        comm: String,
        pid: u32,
        before_exec: Option<u32>,
    },
    /// The container the process runs in.
    Container(String),
    Marker(Marker),
}

/// What stands in a stack for what could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Marker {
    /// The kernel's Python walk stopped at its depth limit (root side cut).
    Truncated,
    /// A Python frame whose code object could not be read.
    UnknownPython,
    /// A descriptor inherited across an exec (opened by the program before).
    OpenedBeforeExec,
    /// A descriptor opened after the tracer last read its program, just before an exec: the
    /// exec replaced the memory and maps its stack needed to be named.
    OpenedJustBeforeExec,
    /// Python frames only were asked for, and there are none.
    NoPythonStack,
    /// An empty stack, where a renderer needs one frame.
    NoStack,
    /// The smaller stacks of a checkpoint beyond the ones tracer keeps, summed.
    SmallerStacks,
}

impl Frame {
    pub fn python(function: &str, file: &str, line: Option<i32>) -> Frame {
        Frame::Python {
            function: function.to_string(),
            file: file.to_string(),
            line,
        }
    }

    pub fn native(symbol: &str) -> Frame {
        Frame::Native {
            symbol: Some(symbol.to_string()),
        }
    }

    pub fn is_python(&self) -> bool {
        matches!(self, Frame::Python { .. })
    }

    /// A line of a Python source file (`.py`): what a reader looks at first. Frames of frozen
    /// or generated code (`<frozen importlib._bootstrap>`, `<string>`) are not.
    pub fn is_source_line(&self) -> bool {
        matches!(self, Frame::Python { file, line: Some(_), .. } if file.ends_with(".py"))
    }

    /// A descriptor's resource without its name: descriptors opened at one place count as one
    /// site whatever file they name.
    pub fn without_name(&self) -> Frame {
        match self {
            Frame::Resource { kind, .. } => Frame::Resource {
                kind: kind.clone(),
                name: None,
            },
            f => f.clone(),
        }
    }
}

impl fmt::Display for Frame {
    /// Every name a target chose goes through `text::clean`: a label is one line of plain text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::text::clean;
        match self {
            Frame::Python {
                function,
                file,
                line: Some(line),
            } => write!(f, "{} ({}:{line})", clean(function), clean(file)),
            Frame::Python {
                function,
                file,
                line: None,
            } => write!(f, "{} ({})", clean(function), clean(file)),
            Frame::Native { symbol: Some(s) } => f.write_str(&clean(s)),
            Frame::Native { symbol: None } => f.write_str("[unknown]"),
            Frame::Resource {
                kind,
                name: Some(n),
            } => write!(f, "[{} {}]", clean(kind), clean(n)),
            Frame::Resource { kind, name: None } => write!(f, "[{}]", clean(kind)),
            Frame::Process {
                comm,
                pid,
                before_exec,
            } => match before_exec {
                None => write!(f, "{} (pid {pid})", clean(comm)),
                Some(1) => write!(f, "{} (pid {pid}, before exec)", clean(comm)),
                Some(n) => write!(f, "{} (pid {pid}, before exec {n})", clean(comm)),
            },
            Frame::Container(c) => write!(f, "container {}", clean(c)),
            Frame::Marker(m) => f.write_str(match m {
                Marker::Truncated => "[truncated]",
                Marker::UnknownPython => "[unknown python frame]",
                Marker::OpenedBeforeExec => "[opened before exec]",
                Marker::OpenedJustBeforeExec => "[opened just before exec]",
                Marker::NoPythonStack => "[no Python stack]",
                Marker::NoStack => "[no stack]",
                Marker::SmallerStacks => "[smaller stacks]",
            }),
        }
    }
}

/// Frames sort as their labels do (reports break ties by stack, in the order of the text).
impl Ord for Frame {
    fn cmp(&self, other: &Frame) -> Ordering {
        if self == other {
            return Ordering::Equal;
        }
        match (self, other) {
            (Frame::Native { symbol: Some(a) }, Frame::Native { symbol: Some(b) }) => a.cmp(b),
            _ => self
                .to_string()
                .cmp(&other.to_string())
                // Two frames with one label (never in practice): any fixed order.
                .then_with(|| format!("{self:?}").cmp(&format!("{other:?}"))),
        }
    }
}

impl PartialOrd for Frame {
    fn partial_cmp(&self, other: &Frame) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_todays() {
        assert_eq!(
            Frame::python("leak", "/srv/app.py", Some(12)).to_string(),
            "leak (/srv/app.py:12)"
        );
        assert_eq!(
            Frame::python("f", "<string>", None).to_string(),
            "f (<string>)"
        );
        assert_eq!(
            Frame::native("_PyObject_Malloc").to_string(),
            "_PyObject_Malloc"
        );
        assert_eq!(Frame::Native { symbol: None }.to_string(), "[unknown]");
        let file = Frame::Resource {
            kind: "file".into(),
            name: Some("/tmp/a.log".into()),
        };
        assert_eq!(file.to_string(), "[file /tmp/a.log]");
        assert_eq!(file.without_name().to_string(), "[file]");
        let sock = Frame::Resource {
            kind: "socket inet/tcp".into(),
            name: None,
        };
        assert_eq!(sock.to_string(), "[socket inet/tcp]");
        let p = Frame::Process {
            comm: "python3".into(),
            pid: 7,
            before_exec: Some(1),
        };
        assert_eq!(p.to_string(), "python3 (pid 7, before exec)");
        let second = Frame::Process {
            comm: "python3".into(),
            pid: 7,
            before_exec: Some(2),
        };
        assert_eq!(second.to_string(), "python3 (pid 7, before exec 2)");
        assert_eq!(
            Frame::Container("ab12".into()).to_string(),
            "container ab12"
        );
        assert_eq!(Frame::Marker(Marker::Truncated).to_string(), "[truncated]");
    }

    #[test]
    fn order_is_the_labels() {
        let a = Frame::python("f", "a.py", Some(10));
        let b = Frame::python("f", "a.py", Some(9));
        // "f (a.py:10)" < "f (a.py:9)" as text.
        assert_eq!(a.cmp(&b), Ordering::Less);
        assert_eq!(
            Frame::native("zz").cmp(&Frame::Marker(Marker::Truncated)),
            "zz".cmp("[truncated]")
        );
    }
}
