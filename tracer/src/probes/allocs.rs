//! The outstanding allocations map: read in batches, and the entries of a process removed.

use tracer_common::{AllocInfo, AllocKey, ALLOC_FREE_LISTED};

use super::Probes;
use crate::batch;

impl Probes {
    /// Removes and returns a process's outstanding allocations.
    pub fn take_allocs(&mut self, pid: u32) -> Vec<(AllocKey, AllocInfo)> {
        let mut mine = Vec::new();
        self.for_each_entry(|k, v| {
            if k.pid == pid {
                mine.push((*k, *v));
            }
        });
        let keys: Vec<AllocKey> = mine.iter().map(|(k, _)| *k).collect();
        self.delete_allocs(&keys);
        mine.retain(|(_, v)| v.flags & ALLOC_FREE_LISTED == 0);
        mine
    }

    /// Removes a process's allocations that `drop` selects (only their keys are held, in
    /// one walk of the map), and returns how many.
    fn drop_allocs_where(&mut self, pid: u32, drop: impl Fn(&AllocInfo) -> bool) -> usize {
        let mut keys = Vec::new();
        self.for_each_entry(|k, v| {
            if k.pid == pid && drop(v) {
                keys.push(*k);
            }
        });
        self.delete_allocs(&keys);
        keys.len()
    }

    pub(super) fn delete_allocs(&mut self, keys: &[AllocKey]) {
        if !keys.is_empty() {
            batch::delete::<AllocKey, AllocInfo>(self.ebpf.map_mut("ALLOCS"), keys);
        }
    }

    /// Removes a process's allocations made before `before_ns` (its heap was replaced by exec).
    pub fn purge_allocs(&mut self, pid: u32, before_ns: u64) -> usize {
        self.drop_allocs_where(pid, |v| v.ts_ns < before_ns)
    }

    /// Calls `f` with every outstanding allocation, read in batches (nothing is kept: a
    /// million entries would weigh ~100 MB in a hash map); returns the number of entries.
    /// Blocks in a free list (`ALLOC_FREE_LISTED`) are not outstanding: skipped.
    pub fn for_each_alloc(&self, mut f: impl FnMut(&AllocKey, &AllocInfo)) -> u64 {
        let mut n = 0;
        self.for_each_entry(|k, v| {
            if v.flags & ALLOC_FREE_LISTED == 0 {
                n += 1;
                f(k, v);
            }
        });
        n
    }

    /// Every entry of the allocation map, free-listed blocks included.
    pub(super) fn for_each_entry(&self, f: impl FnMut(&AllocKey, &AllocInfo)) -> u64 {
        batch::for_each(self.ebpf.map("ALLOCS"), f)
    }
}
