//! What the syscall hooks record: descriptors (and the ones open at an exec), where heaps grew,
//! and the processes traced ones fork.

use std::collections::HashMap;

use aya::maps::{HashMap as BpfHashMap, MapData};
use tracer_common::{FdInfo, FdKey, ForkInfo, ForkKey, Grow, GrowKey, MapInfo, MapKey};

use super::{read_hash, Probes};
use crate::batch;

impl Probes {
    /// Where each traced process's heap grew since it was attached, by stack, and the mappings
    /// it made that are still there (with the stacks that made them).
    pub fn growth(&self) -> (HashMap<GrowKey, Grow>, HashMap<MapKey, MapInfo>) {
        (
            read_hash(self.ebpf.map("GROWS")),
            read_hash(self.ebpf.map("MAPPINGS")),
        )
    }

    /// Tells the kernel where a process's program break is now (its heap's growth is counted
    /// from there).
    pub fn seed_break(&mut self, pid: u32, brk: u64) {
        if let Some(m) = self.ebpf.map_mut("BREAKS") {
            if let Ok(mut t) = BpfHashMap::<&mut MapData, u32, u64>::try_from(m) {
                let _ = t.insert(pid, brk, 0);
            }
        }
    }

    /// Takes the processes traced ones forked since the last call, oldest first.
    pub fn take_forks(&mut self) -> Vec<(ForkKey, ForkInfo)> {
        let all: HashMap<ForkKey, ForkInfo> = read_hash(self.ebpf.map("FORKS"));
        let keys: Vec<ForkKey> = all.keys().copied().collect();
        if !keys.is_empty() {
            batch::delete::<ForkKey, ForkInfo>(self.ebpf.map_mut("FORKS"), &keys);
        }
        let mut v: Vec<(ForkKey, ForkInfo)> = all.into_iter().collect();
        v.sort_by_key(|(_, i)| i.ts_ns);
        v
    }

    /// Has a traced process forked since the last `take_forks`? (One read of the map.)
    pub fn forks_pending(&self) -> bool {
        self.ebpf
            .map("FORKS")
            .and_then(|m| BpfHashMap::<&MapData, ForkKey, ForkInfo>::try_from(m).ok())
            .is_some_and(|h| h.keys().next().is_some())
    }

    pub fn fds(&self) -> HashMap<FdKey, FdInfo> {
        read_hash(self.ebpf.map("FDS"))
    }

    /// The descriptors of `pid` that were open at its last exec, by number: the kernel's entries
    /// older than the exec, and the ones the new program closed or reused since (which the
    /// kernel kept aside). The kernel stops keeping them aside for this exec.
    pub fn take_exec_fds(&mut self, pid: u32, exec_ns: u64) -> HashMap<u32, FdInfo> {
        let mut out: HashMap<u32, FdInfo> = self
            .fds()
            .into_iter()
            .filter(|(k, v)| k.pid == pid && v.ts_ns < exec_ns)
            .map(|(k, v)| (k.fd, v))
            .collect();
        let kept: HashMap<FdKey, FdInfo> = read_hash(self.ebpf.map("EXEC_FDS"));
        for (k, v) in &kept {
            if k.pid == pid && v.ts_ns < exec_ns {
                out.entry(k.fd).or_insert(*v);
            }
        }
        self.forget_exec(pid);
        out
    }

    /// Forgets a process's last exec and the descriptors kept aside for it.
    pub(super) fn forget_exec(&mut self, pid: u32) {
        if let Some(m) = self.ebpf.map_mut("EXEC_NS") {
            if let Ok(mut t) = BpfHashMap::<&mut MapData, u32, u64>::try_from(m) {
                let _ = t.remove(&pid);
            }
        }
        let keys: Vec<FdKey> = read_hash::<FdKey, FdInfo>(self.ebpf.map("EXEC_FDS"))
            .into_keys()
            .filter(|k| k.pid == pid)
            .collect();
        if !keys.is_empty() {
            batch::delete::<FdKey, FdInfo>(self.ebpf.map_mut("EXEC_FDS"), &keys);
        }
    }

    /// Removes a descriptor entry; with `only_if_ts`, only when it is still the same entry.
    pub fn remove_fd(&mut self, key: &FdKey, only_if_ts: Option<u64>) {
        let Some(m) = self.ebpf.map_mut("FDS") else {
            return;
        };
        let Ok(mut t) = BpfHashMap::<&mut MapData, FdKey, FdInfo>::try_from(m) else {
            return;
        };
        if let Some(ts) = only_if_ts {
            match t.get(key, 0) {
                Ok(cur) if cur.ts_ns == ts => {}
                _ => return,
            }
        }
        let _ = t.remove(key);
    }
}
