//! glibc's malloc read from outside, without symbols (Debian's libc is stripped): its heaps are
//! walked chunk by chunk. A chunk's header holds its size; the next chunk's PREV_INUSE bit says
//! whether it is in use. The main arena's heap is the brk `[heap]` (its last chunk is the top);
//! a thread arena's heaps are 64 MiB-aligned mappings starting with a `heap_info` (ar_ptr, prev,
//! size, mprotect_size), the first of an arena followed by its `malloc_state`. Chunks of 128 KiB
//! and more (the threshold moves) are mappings of their own, found by their header at a page
//! start (prev_size 0, size a page multiple with IS_MMAPPED). Free chunks that malloc keeps in
//! its per-thread caches (tcache) and fast bins look in use to a walk: an error bounded by those
//! caches (kilobytes in a Python process), said in the docs. Checked against the target's own
//! `mallinfo2()` on glibc 2.36 and 2.43 (research notes: free bytes equal).

use super::maps::{Resident, Vma, PAGE};

/// HEAP_MAX_SIZE on 64-bit (2 * DEFAULT_MMAP_THRESHOLD_MAX).
const HEAP_MAX: u64 = 64 << 20;
const PREV_INUSE: u64 = 1;
const IS_MMAPPED: u64 = 2;
const SIZE_BITS: u64 = 7;
/// Read at most this much of a heap at once.
const BLOCK: u64 = 8 << 20;

/// What the walk of malloc's heaps found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heaps {
    /// Heaps walked (the brk heap and thread arenas' heaps).
    pub heaps: u64,
    /// Bytes of chunks in use and free (free includes the top chunks), and the free chunks.
    pub in_use: u64,
    pub free: u64,
    pub free_chunks: u64,
    /// Resident bytes of the heaps, and of the free chunks (resident memory that holds
    /// nothing: fragmentation, or a top not trimmed yet).
    pub resident: u64,
    pub free_resident: u64,
    /// What `malloc_trim(0)` would give back: the resident whole pages of free chunks, and the
    /// main arena's top beyond its first page.
    pub trimmable: u64,
    /// Chunks mapped on their own (large allocations): count, bytes, resident bytes.
    pub mmapped: u64,
    pub mmapped_bytes: u64,
    pub mmapped_resident: u64,
    /// Address ranges claimed (heaps and mmapped chunks), sorted.
    pub ranges: Vec<(u64, u64)>,
    /// A walk stopped early (a chunk changing under it, a size that makes no sense).
    pub partial: bool,
}

/// Reads [start, end) of the target in blocks, for a walk that goes forward.
struct Window {
    pid: u32,
    end: u64,
    at: u64,
    buf: Vec<u8>,
}

impl Window {
    fn new(pid: u32, end: u64) -> Window {
        Window {
            pid,
            end,
            at: 0,
            buf: Vec::new(),
        }
    }

    /// The u64 at `addr` (None past the end or unreadable).
    fn u64(&mut self, addr: u64) -> Option<u64> {
        if addr + 8 > self.end {
            return None;
        }
        if addr < self.at || addr + 8 > self.at + self.buf.len() as u64 {
            let len = BLOCK.min(self.end - addr) as usize;
            self.buf = crate::procfs::read_mem(self.pid, addr, len).ok()?;
            self.at = addr;
        }
        let o = (addr - self.at) as usize;
        Some(u64::from_le_bytes(self.buf[o..o + 8].try_into().ok()?))
    }
}

/// Walks the chunks of [first, end): adds them to `h`. `main`: the brk heap (its top's pages
/// are what malloc_trim gives back beyond the free chunks').
fn walk(pid: u32, first: u64, end: u64, main: bool, resident: &Resident, h: &mut Heaps) {
    let mut w = Window::new(pid, end);
    let mut p = first;
    while p + 16 <= end {
        let Some(raw) = w.u64(p + 8) else {
            h.partial = true;
            return;
        };
        let size = raw & !SIZE_BITS;
        if size == 0 {
            // The fenceposts that end a thread arena's heap that is not its current one.
            return;
        }
        if main && size >= 16 && size.is_multiple_of(16) && p + size > end {
            // The top of a heap that grew since its size was read: free to the end.
            h.free += end - p;
            h.free_chunks += 1;
            h.free_resident += resident.bytes_exact(p + 16, end);
            h.trimmable += resident.whole_pages(p + 48, end);
            return;
        }
        if size < 16 || !size.is_multiple_of(16) || p + size > end {
            // A chunk changing under the walk (the target runs on), or not a heap after all.
            h.partial = true;
            return;
        }
        let next = p + size;
        let last = next + 16 > end;
        // In use when the next chunk says so; the last chunk is the top (free).
        let in_use = !last && w.u64(next + 8).is_some_and(|n| n & PREV_INUSE != 0);
        if in_use {
            h.in_use += size;
        } else {
            h.free += size;
            h.free_chunks += 1;
            // malloc_trim(0) madvises the whole pages past a free chunk's links, and shrinks
            // the main arena's top to a page.
            h.free_resident += resident.bytes_exact(p + 16, next);
            if !last || main {
                h.trimmable += resident.whole_pages(p + 48, next);
            }
        }
        if last {
            return;
        }
        p = next;
    }
}

/// A thread arena's heap at `h` (64 MiB-aligned): its end, and where its first chunk is.
fn thread_heap(pid: u32, v: &Vma) -> Option<(u64, u64)> {
    let b = crate::procfs::read_mem(pid, v.start, 48).ok()?;
    let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    let (ar_ptr, size, mprotect) = (word(0), word(2), word(3));
    if size == 0 || size > HEAP_MAX || size % PAGE != 0 || mprotect < size || mprotect > HEAP_MAX {
        return None;
    }
    if size > v.len() + PAGE {
        return None;
    }
    let end = v.start + size.min(v.len());
    // The first heap of an arena holds its malloc_state (2,200 bytes on glibc 2.36, 2,112 on
    // 2.43): the first chunk follows it; a later heap's first chunk follows heap_info.
    let firsts: &[u64] = if ar_ptr == v.start + 48 {
        &[0x8d0, 0x870]
    } else {
        &[0x30]
    };
    firsts
        .iter()
        .map(|o| v.start + o)
        .find(|&c| plausible_chunks(pid, c, end))
        .map(|c| (c, end))
}

/// Do a few chunks from `p` chain up (sizes that fit, the first one's PREV_INUSE set)?
fn plausible_chunks(pid: u32, mut p: u64, end: u64) -> bool {
    let mut w = Window::new(pid, end);
    for i in 0..8 {
        let Some(raw) = w.u64(p + 8) else {
            return i > 0;
        };
        let size = raw & !SIZE_BITS;
        if (i == 0 && raw & PREV_INUSE == 0)
            || size < 32
            || !size.is_multiple_of(16)
            || p + size > end
        {
            return false;
        }
        p += size;
        if p + 16 > end {
            return true;
        }
    }
    true
}

/// Walks the brk heap and the thread arenas' heaps among `anon` (private anonymous mappings),
/// then finds the chunks mapped on their own among the resident pages no heap, pool range or
/// stack claims (`taken`).
pub fn read(pid: u32, anon: &[&Vma], resident: &Resident, taken: &[(u64, u64)]) -> Heaps {
    let mut h = Heaps::default();
    for v in anon {
        if v.path.as_deref() == Some("[heap]") {
            h.heaps += 1;
            h.resident += resident.bytes(v.start, v.end);
            walk(pid, v.start, v.end, true, resident, &mut h);
            h.ranges.push((v.start, v.end));
        } else if v.start % HEAP_MAX == 0 && v.writable() {
            if let Some((first, end)) = thread_heap(pid, v) {
                h.heaps += 1;
                h.resident += resident.bytes(v.start, end);
                walk(pid, first, end, false, resident, &mut h);
                h.ranges.push((v.start, end));
            }
        }
    }
    // Mapped chunks: a header at a resident page start of what nothing else claims.
    let mut claimed: Vec<(u64, u64)> = taken.iter().chain(h.ranges.iter()).copied().collect();
    claimed.sort_unstable();
    let free_of = |a: u64| {
        let i = claimed.partition_point(|r| r.0 <= a);
        i == 0 || claimed[i - 1].1 <= a
    };
    let mut pages = Vec::new();
    for v in anon.iter().filter(|v| v.path.is_none()) {
        let mut a = v.start;
        while a < v.end {
            if free_of(a) && resident.page(a) {
                pages.push((a, v.end));
            }
            a += PAGE;
        }
    }
    let mut skip_to = 0;
    for chunk in pages.chunks(1024) {
        let parts: Vec<(u64, usize)> = chunk.iter().map(|&(a, _)| (a, 16)).collect();
        let buf = crate::procfs::read_mem_many(pid, &parts).ok();
        for (i, &(a, end)) in chunk.iter().enumerate() {
            if a < skip_to {
                continue;
            }
            let hdr = match &buf {
                Some(b) => b[i * 16..i * 16 + 16].to_vec(),
                None => match crate::procfs::read_mem(pid, a, 16) {
                    Ok(b) => b,
                    Err(_) => continue,
                },
            };
            let prev = u64::from_le_bytes(hdr[0..8].try_into().unwrap());
            let raw = u64::from_le_bytes(hdr[8..16].try_into().unwrap());
            // glibc 2.36 gives the mapping's length; 2.43 the length less the header.
            let size = (raw & !SIZE_BITS).div_ceil(PAGE) * PAGE;
            if prev == 0 && raw & SIZE_BITS == IS_MMAPPED && size >= PAGE && a + size <= end {
                h.mmapped += 1;
                h.mmapped_bytes += size;
                h.mmapped_resident += resident.bytes(a, a + size);
                h.ranges.push((a, a + size));
                skip_to = a + size;
            }
        }
    }
    h.ranges.sort_unstable();
    h
}
