//! Exact mode's probes on the malloc family of a traced process's own C library (native
//! allocations: an extension's buffers, numpy's data), and how many processes get them.

use std::collections::HashSet;
use std::path::Path;

use aya::programs::uprobe::UProbeScope;

use super::uprobes::EXIT_PROGRAM;
use super::{FileId, Probes};
use crate::error::{Error, Result};
use crate::procfs;
use crate::say;

/// libc's malloc family, by symbol (exact mode: native allocations).
pub(super) const LIBC_PROGRAMS: [(&str, &str); 6] = [
    ("malloc", "libc_malloc_enter"),
    ("calloc", "libc_calloc_enter"),
    ("realloc", "libc_realloc_enter"),
    ("aligned_alloc", "libc_aligned_enter"),
    ("memalign", "libc_aligned_enter"),
    ("free", "libc_free_enter"),
];

/// Which processes' C library is probed (exact mode), and whether a limit or a failure was said.
#[derive(Default)]
pub(super) struct LibcProbes {
    /// The processes whose C library is probed, keyed by `libc_key`.
    files: HashSet<FileId>,
    /// Processes given C library probes in this recording.
    given: usize,
    /// A C library that could not be probed, or the processes' limit, was said.
    said: bool,
}

impl Probes {
    /// Exact mode: probes on the malloc family of the C library `pid` maps, for that process
    /// only (a probe on the C library for every process would trap every program on the host,
    /// the tracer included): native allocations (an extension's buffers, numpy's data) are
    /// traced too. Returns whether the C library was found and the number of probes attached
    /// now; a C library that cannot be probed is said once.
    pub fn give_libc(&mut self, pid: u32) -> (bool, usize) {
        let Some(m) = procfs::maps(pid).ok().and_then(|maps| {
            maps.into_iter().find(|m| {
                m.offset == 0
                    && m.path.as_deref().is_some_and(|p| {
                        let base = p.rsplit('/').next().unwrap_or(p);
                        base.starts_with("libc.so")
                            || (base.starts_with("libc-") && base.ends_with(".so"))
                    })
            })
        }) else {
            return (false, 0);
        };
        let path =
            std::path::PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end));
        if std::fs::metadata(&path).is_err() {
            return (false, 0);
        }
        let key = libc_key(pid);
        if self.libc.files.contains(&key) {
            return (true, 0);
        }
        // Each probe is removed on its own (a kernel grace period each, ~0.1 s): a recording
        // gives them to a few processes, never again to another once one has ended (processes
        // that come and go would keep the kernel removing probes).
        if self.libc.given >= LIBC_PROCESSES {
            if !self.libc.said {
                self.libc.said = true;
                say!(
                    "tracer: note: native allocations (malloc outside CPython) are traced in the first {LIBC_PROCESSES} processes; pid {pid} and later ones: CPython's allocator only"
                );
            }
            return (true, 0);
        }
        self.libc.given += 1;
        self.libc.files.insert(key);
        match self.attach_libc(&path, key, pid) {
            Ok(n) => (true, n),
            Err(e) => {
                if !self.libc.said {
                    self.libc.said = true;
                    say!(
                        "tracer: note: native allocations (malloc outside CPython) are not traced: {e}"
                    );
                }
                (true, 0)
            }
        }
    }

    /// Exact mode: releases the C library probes of processes that are no longer traced.
    /// `live`: the pids traced now.
    pub fn retire_libc(&mut self, live: impl Iterator<Item = u32>) {
        let live: HashSet<FileId> = live.map(libc_key).collect();
        let gone: Vec<FileId> = self
            .libc
            .files
            .iter()
            .filter(|k| !live.contains(k))
            .copied()
            .collect();
        for k in gone {
            self.libc.files.remove(&k);
            self.release_allocator(k, false);
        }
    }

    /// Attaches probes to libc's malloc family in `path` (the C library a target maps, as the
    /// target sees it) for process `pid` only, keyed as one more file (`file`): exact mode's
    /// native allocations. Returns the number of probes.
    fn attach_libc(&mut self, path: &Path, file: FileId, pid: u32) -> Result<usize> {
        let Some(scope) = std::num::NonZeroU32::new(pid).map(UProbeScope::OneProcess) else {
            return Ok(0);
        };
        if self.links.contains_key(&file) {
            return Ok(0);
        }
        let elf = crate::python::elf::Elf::open(path)
            .map_err(|e| Error::Other(format!("cannot read {}: {e}", path.display())))?;
        let mut links = Vec::new();
        for (symbol, program) in LIBC_PROGRAMS {
            let Some(off) = elf.dynsym(symbol).and_then(|s| elf.vaddr_to_offset(s.addr)) else {
                continue;
            };
            let mut names = vec![program];
            if symbol != "free" {
                names.push(EXIT_PROGRAM);
            }
            for name in names {
                match self.attach_at(name, off, path, scope, &format!(" ({symbol})")) {
                    Ok(id) => links.push((name, id)),
                    Err(e) => {
                        // Leave nothing half-attached.
                        self.links.insert(file, links);
                        self.detach_allocator(file);
                        return Err(e);
                    }
                }
            }
        }
        let n = links.len();
        self.links.insert(file, links);
        Ok(n)
    }
}

/// Exact mode traces the C library's malloc family in this many processes at most (the
/// processes it was attached to or launched, not the children it follows).
const LIBC_PROCESSES: usize = 4;

/// The key of a process's C library probes among the probes' files (no file has inode 0).
fn libc_key(pid: u32) -> FileId {
    (u64::MAX, pid as u64)
}
