//! The traced processes in the kernel's target map, and what the kernel needs to walk their
//! Python frames (the walk's configuration, the thread states).

use std::collections::HashMap;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap};
use tracer_common::{
    FdInfo, FdKey, Grow, GrowKey, MapInfo, MapKey, PidStats, PyConf, TARGET_FOLLOW_FORKS,
    TARGET_HOST_PIDNS, TARGET_TRACED,
};

use super::{load_error, Probes};
use crate::batch;
use crate::error::{one_line, Error, Result};

impl Probes {
    /// Starts tracing a process: its descriptors at once, and its allocations wherever the
    /// allocator probes of its interpreter file are attached (they filter by pid in the kernel).
    /// With `follow`, the processes it forks enter the map as they are made (see
    /// `TARGET_FOLLOW_FORKS`).
    pub fn add_target(&mut self, pid: u32, follow: bool) -> Result<()> {
        self.set_target_flags(pid, TARGET_TRACED | follow_flags(pid, follow))
    }

    /// Follows a process for the processes it starts, without tracing it (a shell, or another
    /// program between a launched command and its Pythons).
    pub fn follow_only(&mut self, pid: u32) -> Result<()> {
        self.set_target_flags(pid, follow_flags(pid, true))
    }

    fn set_target_flags(&mut self, pid: u32, flags: u32) -> Result<()> {
        let mut targets: BpfHashMap<&mut MapData, u32, u32> =
            BpfHashMap::try_from(self.ebpf.map_mut("TARGETS").expect("TARGETS map"))
                .map_err(load_error)?;
        targets.insert(pid, flags, 0).map_err(|e| {
            Error::Other(format!(
                "cannot add pid {pid} to the target map: {}",
                one_line(&e.to_string())
            ))
        })
    }

    /// Stops tracing a process and forgets its entries.
    pub fn remove_target(&mut self, pid: u32) {
        self.remove_targets(&[pid]);
    }

    /// Stops tracing processes and forgets their entries, with one walk of each map whatever
    /// their number (processes that end by the dozen each second must not cost a walk each).
    pub fn remove_targets(&mut self, pids: &[u32]) {
        if pids.is_empty() {
            return;
        }
        if let Some(m) = self.ebpf.map_mut("TARGETS") {
            if let Ok(mut t) = BpfHashMap::<&mut MapData, u32, u32>::try_from(m) {
                for pid in pids {
                    let _ = t.remove(pid);
                }
            }
        }
        for &pid in pids {
            self.remove_pyconf(pid);
            self.forget_exec(pid);
        }
        // Counters of these processes are not the next ones' with their pids.
        if let Some(m) = self.ebpf.map_mut("PID_STATS") {
            if let Ok(mut t) = PerCpuHashMap::<&mut MapData, u32, PidStats>::try_from(m) {
                for pid in pids {
                    let _ = t.remove(pid);
                }
            }
        }
        let gone: std::collections::HashSet<u32> = pids.iter().copied().collect();
        let mut keys = Vec::new();
        self.for_each_entry(|k, _| {
            if gone.contains(&k.pid) {
                keys.push(*k);
            }
        });
        self.delete_allocs(&keys);
        let fds: Vec<FdKey> = self
            .fds()
            .into_keys()
            .filter(|k| gone.contains(&k.pid))
            .collect();
        if !fds.is_empty() {
            batch::delete::<FdKey, FdInfo>(self.ebpf.map_mut("FDS"), &fds);
        }
        let (grows, maps) = self.growth();
        let grows: Vec<GrowKey> = grows
            .into_keys()
            .filter(|k| gone.contains(&k.pid))
            .collect();
        if !grows.is_empty() {
            batch::delete::<GrowKey, Grow>(self.ebpf.map_mut("GROWS"), &grows);
        }
        let maps: Vec<MapKey> = maps.into_keys().filter(|k| gone.contains(&k.pid)).collect();
        if !maps.is_empty() {
            batch::delete::<MapKey, MapInfo>(self.ebpf.map_mut("MAPPINGS"), &maps);
        }
        if let Some(m) = self.ebpf.map_mut("BREAKS") {
            if let Ok(mut t) = BpfHashMap::<&mut MapData, u32, u64>::try_from(m) {
                for pid in pids {
                    let _ = t.remove(pid);
                }
            }
        }
    }

    /// Stops walking a process's Python frames (its program was replaced).
    pub fn remove_pyconf(&mut self, pid: u32) {
        if let Some(m) = self.ebpf.map_mut("PYCONF") {
            if let Ok(mut t) = BpfHashMap::<&mut MapData, u32, PyConf>::try_from(m) {
                let _ = t.remove(&pid);
            }
        }
    }

    /// Tells the kernel how to walk a process's Python frames.
    pub fn set_pyconf(&mut self, pid: u32, conf: PyConf) -> Result<()> {
        let m = self.ebpf.map_mut("PYCONF").expect("PYCONF map");
        let mut t = BpfHashMap::<&mut MapData, u32, PyConf>::try_from(m).map_err(load_error)?;
        t.insert(pid, conf, 0).map_err(|e| {
            Error::Other(format!(
                "cannot configure Python stacks for pid {pid}: {}",
                one_line(&e.to_string())
            ))
        })
    }

    /// Makes the kernel's thread map for `pid` exactly `now` (tid -> PyThreadState), including
    /// entries the kernel added itself for threads that are gone since.
    pub fn set_threads(&mut self, pid: u32, now: &HashMap<u32, u64>) {
        let Some(m) = self.ebpf.map_mut("THREADS") else {
            return;
        };
        let Ok(mut t) = BpfHashMap::<&mut MapData, u64, u64>::try_from(m) else {
            return;
        };
        let key = |tid: u32| ((pid as u64) << 32) | tid as u64;
        let existing: Vec<(u64, u64)> = t
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(k, _)| (k >> 32) as u32 == pid)
            .collect();
        for (k, v) in &existing {
            if now.get(&(*k as u32)) != Some(v) {
                let _ = t.remove(k);
            }
        }
        for (tid, tstate) in now {
            if !existing.contains(&(key(*tid), *tstate)) {
                let _ = t.insert(key(*tid), *tstate, 0);
            }
        }
    }
}

/// The `TARGETS` flags that make the kernel follow a process's forks: only for a process in
/// tracer's own pid namespace, where the pid fork returns is the one the maps key (a container's
/// children are found by the scan of /proc instead).
fn follow_flags(pid: u32, follow: bool) -> u32 {
    if !follow {
        return 0;
    }
    let ns = |p: &str| {
        std::fs::metadata(p)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
    };
    let same = ns(&format!("/proc/{pid}/ns/pid")).is_some()
        && ns(&format!("/proc/{pid}/ns/pid")) == ns("/proc/self/ns/pid");
    if same {
        TARGET_FOLLOW_FORKS | TARGET_HOST_PIDNS
    } else {
        TARGET_FOLLOW_FORKS
    }
}
