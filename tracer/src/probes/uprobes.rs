//! The interpreter's allocator probes (and the recycling probes that go with them), attached to
//! an interpreter file for every process that maps it and released by file, in the order that
//! keeps the map right while the kernel removes them one at a time.

use std::path::Path;

use aya::programs::uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope};
use aya::programs::UProbe;

use super::{load_error, FileId, Probes};
use crate::error::{one_line, Error, Result};
use crate::python::allocator::{Domain, Hook};
use crate::python::{AllocOp, Interpreter};

pub(super) const ENTRY_PROGRAMS: [&str; 4] = [
    "malloc_enter",
    "calloc_enter",
    "realloc_enter",
    "free_enter",
];
pub(super) const EXIT_PROGRAM: &str = "alloc_exit";
pub(super) const FLOOR_PROGRAMS: [&str; 2] = ["noop_enter", "noop_exit"];
/// `_Py_NewReference`: a recycled object's block takes the stack that created it again.
pub(super) const RECYCLE_PROGRAM: &str = "new_reference";
/// Return of `new_keys_object`: the same for a dict's keys table from the keys free list.
pub(super) const KEYS_PROGRAM: &str = "new_keys_exit";
/// 3.8: return of the constructors that use free lists (`_Py_NewReference` is inlined).
pub(super) const CONSTRUCTOR_PROGRAM: &str = "new_object_exit";
/// 3.13: return of `_PyDict_FromItems` (its dict's keys table).
pub(super) const DICT_ITEMS_PROGRAM: &str = "dict_items_exit";

/// `free_keys_object`, by the index of its keys argument: marks a keys table free-listed.
pub(super) const FREE_KEYS_PROGRAMS: [&str; 2] = ["free_keys_arg0", "free_keys_arg1"];

fn entry_program(op: AllocOp) -> &'static str {
    match op {
        AllocOp::Malloc => "malloc_enter",
        AllocOp::Calloc => "calloc_enter",
        AllocOp::Realloc => "realloc_enter",
        AllocOp::Free => "free_enter",
    }
}

impl Probes {
    /// Attaches allocator probes (`hooks`, a subset of the interpreter's) to one interpreter
    /// file, for every process that maps it: one probe per file however many processes share
    /// it, the programs keep the traced pids only. Returns the number of probes.
    pub fn attach_allocator(&mut self, interp: &Interpreter, hooks: &[Hook]) -> Result<usize> {
        let file = interp.file_id;
        let mut links = Vec::new();
        for hook in hooks {
            let (entry, exit) = if self.floor {
                (FLOOR_PROGRAMS[0], FLOOR_PROGRAMS[1])
            } else {
                (entry_program(hook.op), EXIT_PROGRAM)
            };
            let mut programs = vec![entry];
            if hook.op != AllocOp::Free {
                programs.push(exit);
            }
            for name in programs {
                match self.attach_uprobe(name, hook, interp) {
                    Ok(id) => links.push((name, id)),
                    Err(e) => {
                        // Leave nothing half-attached.
                        self.links.entry(file).or_default().extend(links);
                        self.detach_allocator(file);
                        return Err(e);
                    }
                }
            }
        }
        let n = links.len();
        self.links.entry(file).or_default().extend(links);
        Ok(n)
    }

    /// Attaches the `_Py_NewReference` probe to an interpreter file (with its allocator probes,
    /// released with them): an object that a free list hands out again gives its outstanding
    /// block the stack and time of the code that created it, instead of the first allocator's.
    /// On 3.8 (a header inline there) the return probes of the constructors that pop free
    /// lists do it. With .symtab, the return of `new_keys_object` does the same for a dict's
    /// keys table, and `free_keys_object` marks a table free-listed. Returns the number of probes: 0 when the build inlines the function
    /// (`allocator::NEW_REFERENCE_INLINED`), when `recycle` is off (benchmark) or the floor is
    /// measured.
    pub fn attach_recycle(&mut self, interp: &Interpreter) -> Result<usize> {
        if self.floor || !self.recycle {
            return Ok(0);
        }
        let mut todo = Vec::new();
        if let Some(hook) = interp.alloc.new_reference.as_ref() {
            todo.push((RECYCLE_PROGRAM, hook));
        }
        for hook in &interp.alloc.constructors {
            todo.push((CONSTRUCTOR_PROGRAM, hook));
        }
        if todo.is_empty() {
            return Ok(0);
        }
        if let Some(keys) = interp.alloc.new_keys.as_ref() {
            todo.push((KEYS_PROGRAM, keys));
            if let Some((free, arg)) = interp.alloc.free_keys.as_ref() {
                todo.push((FREE_KEYS_PROGRAMS[*arg as usize], free));
            }
            if let Some(items) = interp.alloc.dict_from_items.as_ref() {
                todo.push((DICT_ITEMS_PROGRAM, items));
            }
        }
        let n = todo.len();
        for (name, hook) in todo {
            let id = self.attach_uprobe(name, hook, interp)?;
            self.links
                .entry(interp.file_id)
                .or_default()
                .push((name, id));
        }
        Ok(n)
    }

    /// Attaches the program `name` at `hook`'s place in the interpreter file, for every process
    /// that maps it (the programs filter by pid).
    fn attach_uprobe(
        &mut self,
        name: &'static str,
        hook: &Hook,
        interp: &Interpreter,
    ) -> Result<UProbeLinkId> {
        self.attach_at(
            name,
            hook.file_offset,
            &interp.open_path,
            UProbeScope::AllProcesses,
            &format!(" at {:#x} ({})", hook.file_offset, hook.name),
        )
    }

    /// Attaches the program `name` at file offset `offset` of `path` for `scope`; `place` says
    /// where in an error (after the path).
    pub(super) fn attach_at(
        &mut self,
        name: &'static str,
        offset: u64,
        path: &Path,
        scope: UProbeScope,
        place: &str,
    ) -> Result<UProbeLinkId> {
        let p: &mut UProbe = self
            .ebpf
            .program_mut(name)
            .expect("checked at load")
            .try_into()
            .map_err(load_error)?;
        if p.fd().is_err() {
            p.load().map_err(load_error)?;
        }
        p.attach(UProbeAttachLocation::AbsoluteOffset(offset), path, scope)
            .map_err(|e| {
                Error::Other(format!(
                    "cannot attach a uprobe to {}{place}: {}",
                    path.display(),
                    one_line(&e.to_string())
                ))
            })
    }

    /// Detaches the allocator probes of an interpreter file, at once.
    pub fn detach_allocator(&mut self, file: FileId) {
        for (name, id) in self.links.remove(&file).unwrap_or_default() {
            if let Some(p) = self.ebpf.program_mut(name) {
                let p: std::result::Result<&mut UProbe, _> = p.try_into();
                if let Ok(p) = p {
                    let _ = p.detach(id);
                }
            }
        }
    }

    /// Detaches the allocator probes of an interpreter file off the caller's thread;
    /// `released(file)` tells when
    /// they are all gone. With `keep_frees`, the free probes stay attached (a watch window reads
    /// what it saw while frees are still removed from the map; see `Collector::windows`).
    ///
    /// The kernel removes one perf uprobe at a time (each waits for an RCU grace period under a
    /// global mutex, ~100 ms here), and a probe traps until its turn: entry probes go first, so
    /// that nothing new is recorded, then the return probes that complete what they started,
    /// then the free probes, which keep removing what dies meanwhile.
    pub fn release_allocator(&mut self, file: FileId, keep_frees: bool) {
        let mut links: Vec<(u8, aya::programs::uprobe::UProbeLink)> = Vec::new();
        let mut kept = Vec::new();
        for (name, id) in self.links.remove(&file).unwrap_or_default() {
            let rank = match name {
                "alloc_exit" | "noop_exit" | KEYS_PROGRAM | CONSTRUCTOR_PROGRAM
                | DICT_ITEMS_PROGRAM => 1,
                "free_enter" | "libc_free_enter" | "free_keys_arg0" | "free_keys_arg1" => 2,
                _ => 0,
            };
            if keep_frees && rank == 2 {
                kept.push((name, id));
                continue;
            }
            if let Some(p) = self.ebpf.program_mut(name) {
                let p: std::result::Result<&mut UProbe, _> = p.try_into();
                if let Ok(p) = p {
                    if let Ok(link) = p.take_link(id) {
                        links.push((rank, link));
                    }
                }
            }
        }
        if !kept.is_empty() {
            self.links.insert(file, kept);
        }
        links.sort_by_key(|(r, _)| *r);
        let h = std::thread::spawn(move || {
            for (_, l) in links {
                drop(l);
            }
        });
        self.releasing.entry(file).or_default().push(h);
    }

    /// Starts releasing every allocator probe (see `release_allocator`: nothing new is
    /// recorded from the first step on, frees are followed to the last). Removing a probe costs
    /// the kernel grace periods, one probe at a time: at exit this overlaps the final reading
    /// and the reports instead of following them.
    pub fn release_all(&mut self) {
        let files: Vec<FileId> = self.links.keys().copied().collect();
        for f in files {
            self.release_allocator(f, false);
        }
    }

    /// Are the probes that `release_allocator` let go of gone?
    pub fn released(&mut self, file: FileId) -> bool {
        let Some(hs) = self.releasing.get(&file) else {
            return true;
        };
        if hs.iter().any(|h| !h.is_finished()) {
            return false;
        }
        for h in self.releasing.remove(&file).unwrap_or_default() {
            let _ = h.join();
        }
        true
    }

    /// Waits until every released probe is gone (before exiting).
    pub fn settle(&mut self) {
        for h in self.releasing.drain().flat_map(|(_, hs)| hs) {
            let _ = h.join();
        }
    }
}

/// The probes of a watch window: what the object domain (else the raw domain) allocates,
/// resizes and frees. Every probe costs the target a grace period to remove (see
/// `release_allocator`), so not calloc (rare) and not a second domain. Realloc stays: strings
/// built by formatting (`"%d" % i`, f-strings) get their final address from it.
pub fn watch_hooks(hooks: &[Hook]) -> Vec<Hook> {
    let mut out = Vec::new();
    for op in [AllocOp::Malloc, AllocOp::Realloc, AllocOp::Free] {
        let of_op: Vec<&Hook> = hooks.iter().filter(|h| h.op == op).collect();
        let pick = of_op
            .iter()
            .find(|h| h.domains.contains(&Domain::Obj))
            .or_else(|| of_op.iter().find(|h| h.domains.contains(&Domain::Mem)))
            .or_else(|| of_op.first());
        if let Some(h) = pick {
            out.push((*h).clone());
        }
    }
    out
}
