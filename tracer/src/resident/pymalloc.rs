//! CPython's small-object allocator (pymalloc) read from outside, without symbols: its pools are
//! found by their headers. Every pool starts on a POOL_SIZE boundary with a 48-byte
//! `struct pool_header` {ref.count, freeblock, nextpool, prevpool, arenaindex, szidx,
//! nextoffset, maxnextoffset}, the same from 3.6 to 3.15, and its fields obey invariants tight
//! enough that nothing else passes them (`valid`). Arenas are the pymalloc's own anonymous
//! mappings (often merged with others into one VMA by the kernel), so pools are scanned at every
//! pool-aligned resident page of the private anonymous memory that is neither the brk heap nor
//! a stack. The geometry (4 KiB pools in 256 KiB arenas before 3.10, 16 KiB in 1 MiB since, or
//! as a build chose) is found by which one validates headers, not assumed from the version.
//! Checked against `sys._debugmallocstats()` on 3.6-3.15 and Debian's stripped builds (pools,
//! arenas and blocks in use equal).

use super::maps::{Resident, Vma};

/// Bytes of a pool header.
const POOL_OVERHEAD: u64 = 48;
/// Size classes of 16 bytes up to 512.
const CLASSES: u32 = 32;
const ALIGNMENT: u64 = 16;

/// What the pool scan found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pools {
    pub pool_size: u64,
    /// Pools carved (in use or empty) and their arenas (distinct arena indexes).
    pub pools: u64,
    pub empty_pools: u64,
    pub arenas: u64,
    /// Bytes of blocks handed out (objects).
    pub used: u64,
    /// Resident bytes of the pools (headers, blocks in use, free blocks, empty pools).
    pub resident: u64,
    /// Resident bytes of the empty pools (all free).
    pub empty_resident: u64,
    /// The pools' address ranges (start, end), sorted: claimed by pymalloc.
    pub ranges: Vec<(u64, u64)>,
}

impl Pools {
    /// Resident bytes that hold no block in use: free blocks of used pools and empty pools
    /// (pymalloc never gives them back until a whole arena is free).
    pub fn free_resident(&self) -> u64 {
        self.resident
            .saturating_sub(self.used + self.pools.saturating_sub(self.empty_pools) * POOL_OVERHEAD)
    }
}

fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// A pool header at `addr` for pools of `pool_size`: its (count, block size), or None.
pub fn valid(h: &[u8], addr: u64, pool_size: u64) -> Option<(u64, u64)> {
    if h.len() < POOL_OVERHEAD as usize {
        return None;
    }
    let count = u32le(h, 0) as u64;
    let high = u32le(h, 4);
    let freeblock = u64le(h, 8);
    let next = u64le(h, 16);
    let prev = u64le(h, 24);
    let arenaindex = u32le(h, 32);
    let szidx = u32le(h, 36);
    let nextoffset = u32le(h, 40) as u64;
    let maxnextoffset = u32le(h, 44) as u64;
    if szidx >= CLASSES || high != 0 || arenaindex >= 1 << 24 {
        return None;
    }
    let size = (szidx as u64 + 1) * ALIGNMENT;
    let numblocks = (pool_size - POOL_OVERHEAD) / size;
    if maxnextoffset != pool_size - size {
        return None;
    }
    if nextoffset < POOL_OVERHEAD + 2 * size.min(pool_size)
        || nextoffset > maxnextoffset + size
        || !(nextoffset - POOL_OVERHEAD).is_multiple_of(size)
    {
        return None;
    }
    let carved = (nextoffset - POOL_OVERHEAD) / size;
    if count > carved || count > numblocks {
        return None;
    }
    if freeblock == 0 {
        if count != numblocks {
            return None;
        }
    } else if freeblock < addr + POOL_OVERHEAD
        || freeblock >= addr + nextoffset
        || !(freeblock - addr - POOL_OVERHEAD).is_multiple_of(size)
    {
        return None;
    }
    let pointer = |p: u64| p == 0 || (p.is_multiple_of(8) && p < 1 << 47);
    if !pointer(next) || !pointer(prev) {
        return None;
    }
    Some((count, size))
}

/// Reads `len` bytes at each address (one process_vm_readv per 1,024; a batch with an unreadable
/// address is read again one by one).
fn read_each(pid: u32, addrs: &[u64], len: usize) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::with_capacity(addrs.len());
    for chunk in addrs.chunks(1024) {
        let parts: Vec<(u64, usize)> = chunk.iter().map(|&a| (a, len)).collect();
        match crate::procfs::read_mem_many(pid, &parts) {
            Ok(buf) if buf.len() == len * chunk.len() => {
                out.extend(buf.chunks_exact(len).map(|c| Some(c.to_vec())));
            }
            _ => out.extend(
                chunk
                    .iter()
                    .map(|&a| crate::procfs::read_mem(pid, a, len).ok()),
            ),
        }
    }
    out
}

/// The pool-aligned resident addresses of `ranges` for pools of `pool_size`.
fn candidates(ranges: &[(u64, u64)], resident: &Resident, pool_size: u64) -> Vec<u64> {
    let mut out = Vec::new();
    for &(start, end) in ranges {
        let mut a = start.div_ceil(pool_size) * pool_size;
        while a + pool_size <= end {
            if resident.page(a) {
                out.push(a);
            }
            a += pool_size;
        }
    }
    out
}

/// The pool size of this process: the one whose headers validate on a sample (None: no pool
/// found, pymalloc off or not started).
fn geometry(pid: u32, ranges: &[(u64, u64)], resident: &Resident) -> Option<u64> {
    let mut best = (0, None);
    for pool_size in [16384u64, 4096] {
        let c = candidates(ranges, resident, pool_size);
        // A sample spread over the candidates.
        let step = (c.len() / 512).max(1);
        let sample: Vec<u64> = c.iter().step_by(step).copied().collect();
        let n = read_each(pid, &sample, POOL_OVERHEAD as usize)
            .iter()
            .zip(&sample)
            .filter(|(h, a)| h.as_ref().and_then(|h| valid(h, **a, pool_size)).is_some())
            .count();
        if n > best.0 {
            best = (n, Some(pool_size));
        }
    }
    best.1
}

/// Scans `vmas` (private anonymous memory, the brk heap and stacks left out by the caller) for
/// pools. `pool_size`: the geometry found at an earlier pass, if any.
pub fn scan(pid: u32, vmas: &[&Vma], resident: &Resident, pool_size: Option<u64>) -> Pools {
    // Adjacent mappings merge into ranges: an arena may straddle two VMAs.
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for v in vmas {
        match ranges.last_mut() {
            Some(r) if r.1 == v.start => r.1 = v.end,
            _ => ranges.push((v.start, v.end)),
        }
    }
    let Some(pool_size) = pool_size.or_else(|| geometry(pid, &ranges, resident)) else {
        return Pools::default();
    };
    let arena_size = if pool_size == 4096 {
        256 << 10
    } else {
        1 << 20
    };
    let addrs = candidates(&ranges, resident, pool_size);
    let headers = read_each(pid, &addrs, POOL_OVERHEAD as usize);
    let mut p = Pools {
        pool_size,
        ..Pools::default()
    };
    let mut arenas: std::collections::HashSet<(u32, u64)> = std::collections::HashSet::new();
    for (a, h) in addrs.iter().zip(headers) {
        let Some(h) = h else { continue };
        let Some((count, size)) = valid(&h, *a, pool_size) else {
            continue;
        };
        p.pools += 1;
        // One arena per index and arena-sized window (sub-interpreters number their own).
        arenas.insert((u32le(&h, 32), *a / arena_size));
        let res = resident.bytes(*a, *a + pool_size);
        p.resident += res;
        if count == 0 {
            p.empty_pools += 1;
            p.empty_resident += res;
        }
        p.used += count * size;
        match p.ranges.last_mut() {
            Some(r) if r.1 == *a => r.1 = *a + pool_size,
            _ => p.ranges.push((*a, *a + pool_size)),
        }
    }
    p.arenas = arenas
        .iter()
        .map(|(i, _)| *i)
        .collect::<std::collections::HashSet<u32>>()
        .len() as u64;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(count: u32, freeblock: u64, szidx: u32, nextoffset: u32, max: u32) -> Vec<u8> {
        let mut h = vec![0u8; 48];
        h[0..4].copy_from_slice(&count.to_le_bytes());
        h[8..16].copy_from_slice(&freeblock.to_le_bytes());
        h[16..24].copy_from_slice(&0x7f00_0000_1000u64.to_le_bytes());
        h[24..32].copy_from_slice(&0x7f00_0000_2000u64.to_le_bytes());
        h[32..36].copy_from_slice(&5u32.to_le_bytes());
        h[36..40].copy_from_slice(&szidx.to_le_bytes());
        h[40..44].copy_from_slice(&nextoffset.to_le_bytes());
        h[44..48].copy_from_slice(&max.to_le_bytes());
        h
    }

    #[test]
    fn pool_headers() {
        let pool = 0x7f00_0010_0000u64;
        // 64-byte blocks (szidx 3) in a 16 KiB pool: 10 carved, 7 used, next free at block 7.
        let h = header(7, pool + 48 + 7 * 64, 3, 48 + 10 * 64, 16384 - 64);
        assert_eq!(valid(&h, pool, 16384), Some((7, 64)));
        // The same pool taken for a 4 KiB one: maxnextoffset does not fit.
        assert_eq!(valid(&h, pool, 4096), None);
        // A full pool has no free block.
        let full = (16384 - 48) / 64;
        let h = header(full as u32, 0, 3, 48 + full as u32 * 64, 16384 - 64);
        assert_eq!(valid(&h, pool, 16384), Some((full, 64)));
        // Zeroes (a fresh mapping), a free block outside the pool, a count above the carved.
        assert_eq!(valid(&[0u8; 48], pool, 16384), None);
        let h = header(3, pool + 99_999, 3, 48 + 10 * 64, 16384 - 64);
        assert_eq!(valid(&h, pool, 16384), None);
        let h = header(11, pool + 48, 3, 48 + 10 * 64, 16384 - 64);
        assert_eq!(valid(&h, pool, 16384), None);
        // An empty pool (count 0) is a pool.
        let h = header(0, pool + 48, 3, 48 + 10 * 64, 16384 - 64);
        assert_eq!(valid(&h, pool, 16384), Some((0, 64)));
    }
}
