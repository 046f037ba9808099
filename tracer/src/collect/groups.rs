//! Probe groups: the allocator probes of one interpreter file, shared by every target that maps
//! it, attached for its first target and (exact mode) released with its last.

use std::time::Instant;

use super::watch::Window;
use super::Collector;
use crate::config::Mode;
use crate::probes::FileId;
use crate::python::Interpreter;
use crate::say;

/// The allocator probes of one interpreter file, shared by every target that maps it (the
/// programs keep the traced pids only). In watch mode the group's targets share its windows.
pub struct ProbeGroup {
    pub file: FileId,
    pub window: Window,
    pub next_window: Instant,
    /// Probes attached (exact mode: for as long as a target maps the file).
    pub probes: usize,
}

impl Collector {
    /// The probe group of an interpreter file, created (and in exact mode attached) for its
    /// first target. Returns the number of probes attached for good.
    pub(super) fn join_group(&mut self, interp: &Interpreter) -> crate::error::Result<usize> {
        if let Some(g) = self.groups.iter().find(|g| g.file == interp.file_id) {
            return Ok(g.probes);
        }
        let probes = match self.mode {
            Mode::Exact => {
                let n = self.probes.attach_allocator(interp, &interp.alloc.hooks)?;
                let recycle = self.probes.attach_recycle(interp)?;
                if interp.alloc.new_reference.is_none()
                    && interp.alloc.constructors.is_empty()
                    && !interp.alloc.hooks.is_empty()
                {
                    say!(
                        "tracer: note: {}",
                        crate::python::allocator::NEW_REFERENCE_INLINED
                    );
                }
                n + recycle
            }
            Mode::Watch => 0,
        };
        self.groups.push(ProbeGroup {
            file: interp.file_id,
            window: Window::Closed,
            // The first window opens at once: a short run still gets survivors.
            next_window: Instant::now(),
            probes,
        });
        Ok(probes)
    }

    /// The live targets that map an interpreter file.
    pub(super) fn members(&self, file: FileId) -> Vec<usize> {
        (0..self.targets.len())
            .filter(|&i| {
                self.targets[i].exited_after.is_none() && self.targets[i].interp.file_id == file
            })
            .collect()
    }

    /// Exact mode: detaches the probes of files that no live target maps any more.
    pub(super) fn retire_groups(&mut self) {
        if self.mode != Mode::Exact {
            return;
        }
        let idle: Vec<FileId> = self
            .groups
            .iter()
            .map(|g| g.file)
            .filter(|&f| self.members(f).is_empty())
            .collect();
        for f in idle {
            self.probes.release_allocator(f, false);
            self.groups.retain(|g| g.file != f);
        }
        let live = self
            .targets
            .iter()
            .filter(|t| t.exited_after.is_none())
            .map(|t| t.pid);
        self.probes.retire_libc(live);
    }
}
