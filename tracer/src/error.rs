//! Errors a user can cause, each turned into one actionable line at the edge (main).

use std::fmt;

#[derive(Debug)]
pub enum Error {
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
    KernelFeature(String),
    Output {
        dir: String,
        reason: String,
    },
    Launch {
        cmd: String,
        reason: String,
    },
    BadArgument(String),
    /// Anything else, with context (loading BPF, attaching...).
    Other(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotPrivileged => write!(
                f,
                "tracer needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE): run it with sudo"
            ),
            Error::NoSuchPid(pid) => write!(f, "no process with pid {pid}: check the pid with `ps -p {pid}`"),
            Error::NotPython { pid, comm } => write!(
                f,
                "pid {pid} ({comm}) is not a CPython process: it maps neither libpython nor a Python executable"
            ),
            Error::Exited { pid, comm } => write!(
                f,
                "pid {pid} ({comm}) has exited (a zombie its parent has not reaped yet): there is nothing left to trace"
            ),
            Error::Unsupported { what, version } => write!(
                f,
                "{what} runs Python {version}, which tracer does not support (CPython 3.6 and newer)"
            ),
            Error::KernelFeature(what) => write!(f, "this kernel cannot run tracer: {what}"),
            Error::Output { dir, reason } => {
                write!(f, "cannot write the output directory {dir}: {reason} (choose another with -o DIR)")
            }
            Error::Launch { cmd, reason } => write!(f, "cannot launch `{cmd}`: {reason}"),
            Error::BadArgument(msg) => write!(f, "{msg}"),
            Error::Other(msg) => write!(f, "{msg}"),
        }
    }
}

impl std::error::Error for Error {}

/// The interpreter inspection's errors, each the same case here (said by `Display` above).
impl From<crate::python::error::Error> for Error {
    fn from(e: crate::python::error::Error) -> Error {
        use crate::python::error::Error as E;
        match e {
            E::NotPrivileged => Error::NotPrivileged,
            E::NoSuchPid(pid) => Error::NoSuchPid(pid),
            E::NotPython { pid, comm } => Error::NotPython { pid, comm },
            E::Exited { pid, comm } => Error::Exited { pid, comm },
            E::Unsupported { what, version } => Error::Unsupported { what, version },
            E::Other(msg) => Error::Other(msg),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Keeps a message on one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
