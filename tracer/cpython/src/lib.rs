//! tracer's CPython decoding, with no BPF in it: which file holds the interpreter, which version
//! it is, and where its real allocator functions are (read from the ELF file), and, for a running
//! process, its memory read from outside (read-only): thread states, frames, code objects and the
//! heap census. tracer re-exports it as `tracer::python`; its tests run with a plain `cargo test
//! -p tracer-cpython`, without root (recorded pages: `fixtures`).
//!
//! The layers, bottom first: `procfs`, `text`, `error`, `frame`, `stdlib` (plain data and /proc);
//! `mem` (bytes of remote memory), `elf`; `debug_offsets`, `opcaches`, `layouts` (where CPython's
//! fields are, per version); `strings` (str and bytes objects); `allocator`, `frames`, `census`.

pub mod allocator;
pub mod census;
pub mod debug_offsets;
pub mod elf;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod frame;
pub mod frames;
pub mod layouts;
pub mod mem;
pub mod procfs;
pub mod stdlib;
pub mod strings;
pub mod text;

mod interpreter;

use std::path::{Path, PathBuf};

pub use allocator::{AllocOp, AllocatorHooks, HookSource};
use elf::Elf;
pub use interpreter::{inspect_file, inspect_pid, unreadable_line, Interpreter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub micro: Option<u8>,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.micro {
            Some(m) => write!(f, "{}.{}.{}", self.major, self.minor, m),
            None => write!(f, "{}.{}", self.major, self.minor),
        }
    }
}

impl Version {
    pub fn supported(&self) -> bool {
        self.major == 3 && self.minor >= 6
    }
}

/// A free-threaded build's file: `python3.13t`, `libpython3.14t.so.1.0`.
pub fn free_threaded_name(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    let Some(idx) = base.find("python") else {
        return false;
    };
    let rest = &base[idx + "python".len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(rest.len());
    rest[..digits].contains('.') && rest[digits..].starts_with('t')
}

/// Does this basename look like libpython?
fn is_libpython(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.starts_with("libpython") && base.contains(".so")
}

/// "libpython3.11.so.1.0", "python3.8", "python3.12d" -> version.
pub fn version_from_name(path: &str) -> Option<Version> {
    let base = path.rsplit('/').next()?;
    let idx = base.find("python")? + "python".len();
    let rest = &base[idx..];
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major: u8 = parts.next()?.parse().ok()?;
    let minor: u8 = parts.next()?.parse().ok()?;
    Some(Version {
        major,
        minor,
        micro: None,
    })
}

/// Resolves the interpreter a command will run, before it runs: the executable itself when it
/// links the runtime statically, else the libpython it needs (DT_NEEDED with RUNPATH/RPATH,
/// LD_LIBRARY_PATH and the usual directories).
pub fn interpreter_file_of_executable(
    exe: &Path,
    ld_library_path: Option<&str>,
) -> Option<PathBuf> {
    let elf = Elf::open(exe).ok()?;
    if elf.looks_like_python() && !elf.needs_libpython() {
        return Some(exe.to_path_buf());
    }
    let (needed, runpaths) = elf.needed_and_runpaths();
    let lib = needed.into_iter().find(|n| is_libpython(n))?;
    let origin = exe
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut dirs: Vec<String> = Vec::new();
    for rp in runpaths {
        dirs.extend(
            rp.split(':')
                .map(|d| d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin)),
        );
    }
    if let Some(llp) = ld_library_path {
        dirs.extend(llp.split(':').filter(|d| !d.is_empty()).map(str::to_string));
    }
    for d in [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
        "/usr/local/lib",
    ] {
        dirs.push(d.to_string());
    }
    // As the kernel will name it in the process's maps: `$ORIGIN/../lib` and symlinks resolved
    // (the mapping is found by that name once the process runs).
    dirs.into_iter()
        .map(|d| Path::new(&d).join(&lib))
        .find(|p| p.exists())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_names() {
        let v = version_from_name("/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0").unwrap();
        assert_eq!((v.major, v.minor), (3, 11));
        let v = version_from_name("/usr/bin/python3.8").unwrap();
        assert_eq!((v.major, v.minor), (3, 8));
        let v = version_from_name("libpython3.13t.so.1.0").unwrap();
        assert_eq!((v.major, v.minor), (3, 13));
        assert!(version_from_name("/usr/bin/python3").is_none());
        assert!(version_from_name("/bin/bash").is_none());
        assert!(!Version {
            major: 2,
            minor: 7,
            micro: None
        }
        .supported());
        assert!(Version {
            major: 3,
            minor: 6,
            micro: None
        }
        .supported());
    }

    #[test]
    fn free_threaded_names() {
        assert!(free_threaded_name("/usr/bin/python3.13t"));
        assert!(free_threaded_name("/usr/lib/libpython3.14t.so.1.0"));
        assert!(!free_threaded_name("/usr/bin/python3.13"));
        assert!(!free_threaded_name("/usr/lib/libpython3.14.so.1.0"));
        assert!(!free_threaded_name("/opt/python/bin/python3"));
        assert!(!free_threaded_name("/usr/bin/python3.12-dbg"));
    }

    #[test]
    fn libpython_names() {
        assert!(is_libpython("/usr/lib/libpython3.11.so.1.0"));
        assert!(is_libpython("libpython3.13t.so"));
        assert!(!is_libpython(
            "/usr/lib/python3.11/lib-dynload/_json.cpython-311.so"
        ));
    }
}
