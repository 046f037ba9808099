//! The kernel's stack maps: native stacks by id, Python stacks by key, and their collection
//! (the kernel programs never empty them).

use aya::maps::{HashMap as BpfHashMap, MapData, StackTraceMap};
use tracer_common::{FdInfo, FdKey, PyStack, SampleKey};

use super::{read_hash, read_keys, Probes};
use crate::batch;

/// A stack's two keys: the native stack id and the Python stack key.
pub type StackKeyRef = (i32, u64);

impl Probes {
    /// A Python stack recorded by the kernel.
    pub fn pystack(&self, key: u64) -> Option<PyStack> {
        if key == 0 {
            return None;
        }
        ["PYSTACKS", "FD_PYSTACKS"].into_iter().find_map(|name| {
            let m = self.ebpf.map(name)?;
            let t = BpfHashMap::<&MapData, u64, PyStack>::try_from(m).ok()?;
            t.get(&key, 0).ok()
        })
    }

    /// Frees the stacks nothing refers to any more from the kernel's stack maps, which are never
    /// emptied by the kernel programs: a long exact-mode recording (or a few interpreters
    /// starting) fills them with the stacks of allocations long freed, and every stack after
    /// that is lost. `used` are the stacks the user side still holds (watch mode's survivors); the
    /// allocation, descriptor and in-flight maps are read here. A stack is freed once unused at
    /// two calls in a row (an event records its stack before the entry that refers to it).
    pub fn collect_stacks(
        &mut self,
        used: impl Iterator<Item = StackKeyRef>,
        force: bool,
    ) -> (usize, usize) {
        // Only when the maps fill up (an entry freed while an event takes it again loses that
        // event's stack: rare, but not worth it while there is room).
        let python_keys = read_keys::<u64, PyStack>(self.ebpf.map("PYSTACKS")).len();
        if !force && python_keys < 65536 / 2 {
            self.unused_stacks = Default::default();
            return (0, 0);
        }
        let mut native: std::collections::HashSet<i32> = std::collections::HashSet::new();
        let mut python: std::collections::HashSet<u64> = std::collections::HashSet::new();
        for (u, p) in used {
            native.insert(u);
            python.insert(p);
        }
        self.for_each_entry(|_, a| {
            native.insert(a.ustack);
            python.insert(a.pystack);
        });
        for v in self.fds().values() {
            native.insert(v.ustack);
            python.insert(v.pystack);
        }
        for v in read_hash::<FdKey, FdInfo>(self.ebpf.map("EXEC_FDS")).values() {
            native.insert(v.ustack);
            python.insert(v.pystack);
        }
        for v in read_hash::<u64, tracer_common::PendingAlloc>(self.ebpf.map("PENDING")).values() {
            native.insert(v.ustack);
            python.insert(v.pystack);
        }
        for k in read_hash::<SampleKey, u64>(self.ebpf.map("SAMPLES")).keys() {
            python.insert(k.stack);
        }
        let (grows, maps) = self.growth();
        for k in grows.keys() {
            native.insert(k.ustack);
            python.insert(k.pystack);
        }
        for v in maps.values() {
            native.insert(v.ustack);
            python.insert(v.pystack);
        }
        let (old_native, old_python) = std::mem::take(&mut self.unused_stacks);
        let mut freed = (0, 0);
        let mut unused_native = std::collections::HashSet::new();
        if let Some(m) = self.ebpf.map_mut("STACKS") {
            if let Ok(mut st) = StackTraceMap::try_from(m) {
                let ids: Vec<u32> = st.stack_ids().filter_map(|r| r.ok()).collect();
                for id in ids {
                    if native.contains(&(id as i32)) {
                        continue;
                    }
                    if old_native.contains(&id) {
                        if st.remove(&id).is_ok() {
                            freed.0 += 1;
                        }
                    } else {
                        unused_native.insert(id);
                    }
                }
            }
        }
        let mut unused_python = std::collections::HashSet::new();
        for name in ["PYSTACKS", "FD_PYSTACKS"] {
            let mut doomed = Vec::new();
            for k in read_keys::<u64, PyStack>(self.ebpf.map(name)) {
                if python.contains(&k) {
                    continue;
                }
                if old_python.contains(&k) {
                    doomed.push(k);
                } else {
                    unused_python.insert(k);
                }
            }
            if !doomed.is_empty() {
                freed.1 += doomed.len();
                batch::delete::<u64, PyStack>(self.ebpf.map_mut(name), &doomed);
            }
        }
        self.unused_stacks = (unused_native, unused_python);
        freed
    }

    /// The user stack for a stack id, leaf first.
    pub fn stack(&self, id: i32) -> Option<Vec<u64>> {
        if id < 0 {
            return None;
        }
        let m = StackTraceMap::try_from(self.ebpf.map("STACKS")?).ok()?;
        let st = m.get(&(id as u32), 0).ok()?;
        Some(st.frames().iter().map(|f| f.ip).collect())
    }
}
