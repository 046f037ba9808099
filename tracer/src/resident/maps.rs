//! A process's mappings as the kernel counts them (/proc/PID/smaps) and which of their pages are
//! resident (/proc/PID/pagemap). The pagemap is read before any byte of the process is: reading
//! a page that was never touched maps the shared zero page into it (pagemap then says present),
//! and reading untouched shared memory even allocates it. Pages backed by the zero page are not
//! resident memory (smaps does not count them either).

use std::fs;
use std::io::{self, Read as _, Seek as _, SeekFrom};

pub const PAGE: u64 = 4096;

/// One mapping of /proc/PID/smaps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// `rwxp` / `rw-s`...
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    /// The path, `[heap]`, `[stack]`, `[vdso]`... (None for an anonymous mapping).
    pub path: Option<String>,
    /// Resident, proportional and swapped bytes.
    pub rss: u64,
    pub pss: u64,
    pub swap: u64,
}

impl Vma {
    pub fn shared(&self) -> bool {
        self.perms.as_bytes().get(3) == Some(&b's')
    }

    pub fn writable(&self) -> bool {
        self.perms.as_bytes().get(1) == Some(&b'w')
    }

    pub fn readable(&self) -> bool {
        self.perms.as_bytes().first() == Some(&b'r')
    }

    /// Private memory that belongs to no file: the heap, stacks, allocators' mappings.
    pub fn anonymous(&self) -> bool {
        !self.shared()
            && self.inode == 0
            && self
                .path
                .as_deref()
                .is_none_or(|p| p == "[heap]" || p.starts_with("[stack"))
    }

    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Parses the text of /proc/PID/smaps.
pub fn parse_smaps(text: &str) -> Vec<Vma> {
    let mut out: Vec<Vma> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                let perms = words.next().unwrap_or("").to_string();
                let offset = words
                    .next()
                    .and_then(|o| u64::from_str_radix(o, 16).ok())
                    .unwrap_or(0);
                let _dev = words.next();
                let inode = words.next().and_then(|i| i.parse().ok()).unwrap_or(0);
                let rest: Vec<&str> = words.collect();
                let path = (!rest.is_empty()).then(|| rest.join(" "));
                out.push(Vma {
                    start,
                    end,
                    perms,
                    offset,
                    inode,
                    path,
                    ..Vma::default()
                });
                continue;
            }
        }
        let Some(v) = out.last_mut() else { continue };
        let kb = || -> u64 {
            line.split_ascii_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        match first {
            "Rss:" => v.rss = kb(),
            "Pss:" => v.pss = kb(),
            "Swap:" => v.swap = kb(),
            _ => {}
        }
    }
    crate::procfs::keep_latest_views(&mut out, |v| (v.start, v.end));
    out
}

pub fn smaps(pid: u32) -> io::Result<Vec<Vma>> {
    Ok(parse_smaps(&fs::read_to_string(format!(
        "/proc/{pid}/smaps"
    ))?))
}

/// The resident pages of some mappings: one bit per page, set for a page present in memory
/// and not the shared zero page.
#[derive(Debug, Default)]
pub struct Resident {
    /// (start, end, bits) per mapping read, sorted by start.
    ranges: Vec<(u64, u64, Vec<u64>)>,
}

/// KPF_ZERO_PAGE in /proc/kpageflags.
const KPF_ZERO_PAGE: u64 = 1 << 24;

impl Resident {
    /// Reads the pagemap of `vmas` (the private anonymous ones are what is asked of it).
    pub fn read(pid: u32, vmas: &[&Vma]) -> io::Result<Resident> {
        let mut f = fs::File::open(format!("/proc/{pid}/pagemap"))?;
        let mut ranges = Vec::new();
        let mut pfn_seen: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
        let mut entries: Vec<(usize, usize, u64)> = Vec::new();
        for (vi, v) in vmas.iter().enumerate() {
            let pages = (v.len() / PAGE) as usize;
            let mut raw = vec![0u8; pages * 8];
            f.seek(SeekFrom::Start(v.start / PAGE * 8))?;
            if f.read_exact(&mut raw).is_err() {
                ranges.push((v.start, v.end, vec![0u64; pages.div_ceil(64)]));
                continue;
            }
            let mut bits = vec![0u64; pages.div_ceil(64)];
            for (i, e) in raw.chunks_exact(8).enumerate() {
                let e = u64::from_le_bytes(e.try_into().unwrap());
                if e & (1 << 63) != 0 {
                    bits[i / 64] |= 1 << (i % 64);
                    let pfn = e & ((1 << 55) - 1);
                    if pfn != 0 {
                        *pfn_seen.entry(pfn).or_default() += 1;
                        entries.push((vi, i, pfn));
                    }
                }
            }
            ranges.push((v.start, v.end, bits));
        }
        // The zero page: a frame present in several private pages (and said so by kpageflags).
        let shared: Vec<u64> = pfn_seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(p, _)| *p)
            .collect();
        if !shared.is_empty() {
            let zero: std::collections::HashSet<u64> = zero_pages(&shared);
            if !zero.is_empty() {
                for (vi, i, pfn) in entries {
                    if zero.contains(&pfn) {
                        ranges[vi].2[i / 64] &= !(1 << (i % 64));
                    }
                }
            }
        }
        ranges.sort_by_key(|r| r.0);
        Ok(Resident { ranges })
    }

    /// Is the page at `addr` resident (false for a page of a mapping not read)?
    pub fn page(&self, addr: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.0 <= addr);
        if i == 0 {
            return false;
        }
        let (start, end, bits) = &self.ranges[i - 1];
        if addr >= *end {
            return false;
        }
        let p = ((addr - start) / PAGE) as usize;
        bits[p / 64] & (1 << (p % 64)) != 0
    }

    /// Resident bytes in [start, end) (page granularity; partial pages count whole).
    pub fn bytes(&self, start: u64, end: u64) -> u64 {
        let mut n = 0;
        let mut a = start / PAGE * PAGE;
        while a < end {
            if self.page(a) {
                n += PAGE;
            }
            a += PAGE;
        }
        n
    }

    /// Resident bytes of [start, end) to the byte: the part of each resident page it covers.
    pub fn bytes_exact(&self, start: u64, end: u64) -> u64 {
        let mut n = 0;
        let mut a = start;
        while a < end {
            let page_end = (a / PAGE + 1) * PAGE;
            let to = page_end.min(end);
            if self.page(a) {
                n += to - a;
            }
            a = to;
        }
        n
    }

    /// Resident bytes of the whole pages inside [start, end).
    pub fn whole_pages(&self, start: u64, end: u64) -> u64 {
        let first = start.div_ceil(PAGE) * PAGE;
        let last = end / PAGE * PAGE;
        if last <= first {
            return 0;
        }
        self.bytes(first, last)
    }
}

/// The frames among `pfns` that are the shared zero page (/proc/kpageflags, root only).
fn zero_pages(pfns: &[u64]) -> std::collections::HashSet<u64> {
    let mut out = std::collections::HashSet::new();
    let Ok(mut f) = fs::File::open("/proc/kpageflags") else {
        return out;
    };
    for &pfn in pfns {
        let mut b = [0u8; 8];
        if f.seek(SeekFrom::Start(pfn * 8)).is_ok()
            && f.read_exact(&mut b).is_ok()
            && u64::from_le_bytes(b) & KPF_ZERO_PAGE != 0
        {
            out.insert(pfn);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_text() {
        let text = "\
55d0c0a00000-55d0c0c21000 rw-p 00000000 00:00 0                          [heap]
Size:               2180 kB
Rss:                2100 kB
Pss:                2100 kB
Swap:                  0 kB
7f12a0000000-7f12a0021000 rw-p 00000000 00:00 0 
Rss:                 132 kB
7f12b0000000-7f12b0200000 r-xp 00010000 fe:01 1234                       /usr/lib/libpython3.11.so.1.0
Rss:                1024 kB
Pss:                 512 kB
7f12c0000000-7f12c0100000 rw-s 00000000 00:01 99                         /dev/zero (deleted)
Rss:                 64 kB
";
        let v = parse_smaps(text);
        assert_eq!(v.len(), 4);
        assert_eq!(v[0].path.as_deref(), Some("[heap]"));
        assert_eq!(v[0].rss, 2100 * 1024);
        assert!(v[0].anonymous() && v[1].anonymous());
        assert!(!v[2].anonymous() && v[2].inode == 1234 && v[2].pss == 512 * 1024);
        assert!(v[3].shared() && !v[3].anonymous());
        assert_eq!(v[3].path.as_deref(), Some("/dev/zero (deleted)"));
    }

    /// The brk heap listed twice in one read (it grew between two pages of the listing, seen
    /// under load on 6.18): its resident bytes were counted twice and a reading's total jumped
    /// by the heap's size. Counted once, as it is now.
    #[test]
    fn a_heap_listed_twice_counts_once() {
        let text = "\
55ebe60f7000-55ebf176c000 rw-p 00000000 00:00 0                          [heap]
Rss:              186368 kB
55ebe60f7000-55ebf179c000 rw-p 00000000 00:00 0                          [heap]
Rss:              186560 kB
7f12a0000000-7f12a0021000 rw-p 00000000 00:00 0 
Rss:                 132 kB
";
        let v = parse_smaps(text);
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].end, v[0].rss), (0x55ebf179c000, 186560 * 1024));
        assert_eq!(v.iter().map(|v| v.rss).sum::<u64>(), (186560 + 132) * 1024);
    }

    #[test]
    fn resident_bits() {
        let r = Resident {
            ranges: vec![(0x10000, 0x14000, vec![0b1011])],
        };
        assert!(r.page(0x10000) && r.page(0x11fff) && !r.page(0x12000) && r.page(0x13000));
        assert!(!r.page(0x14000) && !r.page(0xf000));
        assert_eq!(r.bytes(0x10000, 0x14000), 3 * PAGE);
        assert_eq!(r.whole_pages(0x10010, 0x13010), PAGE);
        assert_eq!(r.bytes_exact(0x10ff0, 0x12010), 0x10 + PAGE);
    }
}
