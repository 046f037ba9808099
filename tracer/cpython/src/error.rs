//! What can go wrong inspecting a process's interpreter. tracer turns each into its own error
//! (`From`), which says it to the user in one actionable line.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The process's maps are refused to a user that is not root.
    NotPrivileged,
    NoSuchPid(u32),
    NotPython {
        pid: u32,
        comm: String,
    },
    /// A zombie: it has exited, its parent has not reaped it yet.
    Exited {
        pid: u32,
        comm: String,
    },
    Unsupported {
        what: String,
        version: String,
    },
    /// Anything else, with context.
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotPrivileged => write!(f, "not privileged to read the process"),
            Error::NoSuchPid(pid) => write!(f, "no process with pid {pid}"),
            Error::NotPython { pid, comm } => {
                write!(f, "pid {pid} ({comm}) is not a CPython process")
            }
            Error::Exited { pid, comm } => write!(f, "pid {pid} ({comm}) has exited"),
            Error::Unsupported { what, version } => {
                write!(f, "{what} runs Python {version}, which is not supported")
            }
            Error::Other(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
