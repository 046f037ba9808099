//! The target's memory, read from user space, behind one small interface: `Memory` ("the bytes
//! at this address of the target"), implemented for a live process (process_vm_readv, never a
//! write), for a page cache over another `Memory` (one census pass), and for recorded pages (a
//! recorder logs the pages a decoder reads from a live process; a replay serves them again, so
//! decoding is unit-tested on bytes, without root or a live interpreter). The little-endian word
//! readers live here too. It knows bytes, not CPython: what reads a CPython object (a str, a
//! layout's offset) is in the layers above (`strings`, `frames`, `census`).

use std::cell::RefCell;
use std::collections::HashMap;

use crate::procfs;

pub const PAGE: u64 = 4096;

/// Read-only access to a target's memory.
pub trait Memory {
    /// Fills `out` with the bytes at `addr`; false when any of them cannot be read.
    fn read(&self, addr: u64, out: &mut [u8]) -> bool;

    /// Several ranges read as one consistent copy (a live process: one process_vm_readv),
    /// concatenated.
    fn read_many(&self, parts: &[(u64, usize)]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; parts.iter().map(|p| p.1).sum()];
        let mut at = 0;
        for &(addr, len) in parts {
            if !self.read(addr, &mut buf[at..at + len]) {
                return None;
            }
            at += len;
        }
        Some(buf)
    }

    /// The bytes are already in this process (recorded pages): a page cache over it would
    /// only copy them (and would hide which bytes are read).
    fn caches_pages(&self) -> bool {
        false
    }

    /// `len` bytes at `addr` (None for a null pointer or an unreadable range).
    fn bytes(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        if addr < 0x1000 {
            return None;
        }
        let mut b = vec![0u8; len];
        self.read(addr, &mut b).then_some(b)
    }

    /// The little-endian word at `addr`.
    fn u64(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        (addr >= 0x1000 && self.read(addr, &mut b)).then(|| u64::from_le_bytes(b))
    }
}

/// A live process's memory, read with process_vm_readv (never written).
pub struct Process(pub u32);

impl Memory for Process {
    fn read(&self, addr: u64, out: &mut [u8]) -> bool {
        match procfs::read_mem(self.0, addr, out.len()) {
            Ok(b) => {
                out.copy_from_slice(&b);
                true
            }
            Err(_) => false,
        }
    }

    fn read_many(&self, parts: &[(u64, usize)]) -> Option<Vec<u8>> {
        procfs::read_mem_many(self.0, parts).ok()
    }
}

// ---- Little-endian fields of bytes already read ----

/// An offset into bytes read from the target (layouts give u64 offsets, slices use usize).
pub trait Offset: Copy {
    fn index(self) -> usize;
}

impl Offset for u64 {
    fn index(self) -> usize {
        self as usize
    }
}

impl Offset for usize {
    fn index(self) -> usize {
        self
    }
}

fn field<const N: usize>(b: &[u8], off: impl Offset) -> [u8; N] {
    let o = off.index();
    o.checked_add(N)
        .and_then(|end| b.get(o..end))
        .map(|s| s.try_into().unwrap())
        .unwrap_or([0; N])
}

/// The little-endian u64 at `off` in `b` (0 past its end).
pub fn u64_at(b: &[u8], off: impl Offset) -> u64 {
    u64::from_le_bytes(field(b, off))
}

/// The little-endian u32 at `off` in `b` (0 past its end).
pub fn u32_at(b: &[u8], off: impl Offset) -> u32 {
    u32::from_le_bytes(field(b, off))
}

/// The little-endian i32 at `off` in `b` (0 past its end).
pub fn i32_at(b: &[u8], off: impl Offset) -> i32 {
    i32::from_le_bytes(field(b, off))
}

// ---- A page cache ----

/// Pages kept by a cache (16 MiB); it is emptied when full.
const MAX_PAGES: usize = 4096;

/// Another `Memory` read a page at a time, pages kept until `clear`/`forget` (one census pass:
/// a fuzzy snapshot read with few system calls).
pub struct Pages<'a> {
    src: &'a dyn Memory,
    pages: RefCell<HashMap<u64, Option<Box<[u8]>>>>,
}

impl<'a> Pages<'a> {
    pub fn new(src: &'a dyn Memory) -> Pages<'a> {
        Pages {
            src,
            pages: RefCell::new(HashMap::new()),
        }
    }

    /// Copies `out.len()` bytes from offset `off` of the page at `base`, reading it if needed.
    fn copy_from_page(&self, base: u64, off: usize, out: &mut [u8]) -> bool {
        let mut pages = self.pages.borrow_mut();
        if pages.len() >= MAX_PAGES && !pages.contains_key(&base) {
            pages.clear();
        }
        let page = pages.entry(base).or_insert_with(|| {
            let mut p = vec![0u8; PAGE as usize];
            self.src.read(base, &mut p).then(|| p.into_boxed_slice())
        });
        match page {
            Some(p) => {
                out.copy_from_slice(&p[off..off + out.len()]);
                true
            }
            None => false,
        }
    }

    /// Drops every cached page: what is read next is read fresh.
    pub fn clear(&self) {
        self.pages.borrow_mut().clear();
    }

    /// Drops the cached pages of `addr..addr+len` (read them again, fresh).
    pub fn forget(&self, addr: u64, len: u64) {
        let mut pages = self.pages.borrow_mut();
        let mut p = addr & !(PAGE - 1);
        while p < addr + len {
            pages.remove(&p);
            p += PAGE;
        }
    }
}

/// Fills `out` from the pages that hold `addr..addr + out.len()`: `copy(base, off, part)` copies
/// the bytes at offset `off` of the page at `base` into `part`; false when one cannot.
fn by_page(addr: u64, out: &mut [u8], mut copy: impl FnMut(u64, usize, &mut [u8]) -> bool) -> bool {
    let mut done = 0;
    while done < out.len() {
        let a = addr + done as u64;
        let base = a & !(PAGE - 1);
        let off = (a - base) as usize;
        let n = (PAGE as usize - off).min(out.len() - done);
        if !copy(base, off, &mut out[done..done + n]) {
            return false;
        }
        done += n;
    }
    true
}

impl Memory for Pages<'_> {
    fn read(&self, addr: u64, out: &mut [u8]) -> bool {
        if addr < 0x1000 {
            return false;
        }
        // Big reads go straight to the source, and every read to a source in memory.
        if out.len() as u64 > 2 * PAGE || self.src.caches_pages() {
            return self.src.read(addr, out);
        }
        by_page(addr, out, |base, off, part| {
            self.copy_from_page(base, off, part)
        })
    }
}

/// Recorded pages (test fixtures): a recorder of what decoders read from a live process, a
/// replay of it, and their file format.
#[cfg(test)]
pub mod recorded {
    use std::collections::BTreeMap;
    use std::io::{self, Read, Write};
    use std::sync::Mutex;

    use super::{Memory, PAGE};

    /// Pages of a target's memory by address (page-aligned, PAGE bytes each).
    pub type PageMap = BTreeMap<u64, Box<[u8]>>;

    fn read_pages(pages: &PageMap, addr: u64, out: &mut [u8]) -> bool {
        super::by_page(addr, out, |base, off, part| match pages.get(&base) {
            Some(p) => {
                part.copy_from_slice(&p[off..off + part.len()]);
                true
            }
            None => false,
        })
    }

    /// A `Memory` that reads whole pages from another one, once, and keeps every page it read:
    /// what decoders read from a live process, saved as a fixture. Its view is a snapshot (a page is
    /// read once), which a quiet target makes consistent.
    /// A page's bytes, and a bit per byte: read by a decoder.
    type UsedPage = (Box<[u8]>, Box<[u64]>);

    pub struct Recorder<M: Memory> {
        src: M,
        /// Each page read, with a bit per byte the decoders read.
        pages: Mutex<BTreeMap<u64, UsedPage>>,
    }

    impl<M: Memory> Recorder<M> {
        pub fn new(src: M) -> Recorder<M> {
            Recorder {
                src,
                pages: Mutex::new(BTreeMap::new()),
            }
        }

        /// The pages read, the bytes no decoder read set to zero (a fixture stays small, and
        /// says only what was used).
        pub fn pages(&self) -> PageMap {
            let pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
            pages
                .iter()
                .map(|(&base, (bytes, used))| {
                    let mut p = bytes.clone();
                    for (i, b) in p.iter_mut().enumerate() {
                        if used[i / 64] & (1 << (i % 64)) == 0 {
                            *b = 0;
                        }
                    }
                    (base, p)
                })
                .collect()
        }
    }

    impl<M: Memory> Memory for Recorder<M> {
        fn read(&self, addr: u64, out: &mut [u8]) -> bool {
            let Some(end) = addr.checked_add(out.len() as u64) else {
                return false;
            };
            if addr < 0x1000 {
                return false;
            }
            let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
            let mut base = addr & !(PAGE - 1);
            while base < end {
                if let std::collections::btree_map::Entry::Vacant(e) = pages.entry(base) {
                    let mut p = vec![0u8; PAGE as usize];
                    if !self.src.read(base, &mut p) {
                        return false;
                    }
                    let used = vec![0u64; PAGE as usize / 64].into_boxed_slice();
                    e.insert((p.into_boxed_slice(), used));
                }
                base += PAGE;
            }
            super::by_page(addr, out, |base, off, part| {
                let (bytes, used) = pages.get_mut(&base).unwrap();
                part.copy_from_slice(&bytes[off..off + part.len()]);
                for i in off..off + part.len() {
                    used[i / 64] |= 1 << (i % 64);
                }
                true
            })
        }

        fn caches_pages(&self) -> bool {
            true
        }
    }

    /// Recorded pages served again; a page that was not recorded cannot be read.
    pub struct Replay {
        pub pages: PageMap,
    }

    impl Memory for Replay {
        fn read(&self, addr: u64, out: &mut [u8]) -> bool {
            addr.checked_add(out.len() as u64).is_some() && read_pages(&self.pages, addr, out)
        }

        fn caches_pages(&self) -> bool {
            true
        }
    }

    const MAGIC: &[u8; 8] = b"TRPAGES1";

    /// Writes `meta` (a JSON text) and the pages, deflate-compressed: the magic, the meta's length
    /// and text, the page count, then (address, PAGE bytes) per page, integers little-endian.
    pub fn save_pages(w: impl Write, meta: &str, pages: &PageMap) -> io::Result<()> {
        let mut z = flate2::write::DeflateEncoder::new(w, flate2::Compression::best());
        z.write_all(MAGIC)?;
        z.write_all(&(meta.len() as u64).to_le_bytes())?;
        z.write_all(meta.as_bytes())?;
        z.write_all(&(pages.len() as u64).to_le_bytes())?;
        for (addr, p) in pages {
            z.write_all(&addr.to_le_bytes())?;
            z.write_all(p)?;
        }
        z.finish()?;
        Ok(())
    }

    /// Reads what `save_pages` wrote: (meta, pages).
    pub fn load_pages(r: impl Read) -> io::Result<(String, PageMap)> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let mut z = flate2::read::DeflateDecoder::new(r);
        let mut word = [0u8; 8];
        z.read_exact(&mut word)?;
        if &word != MAGIC {
            return Err(bad("not a page fixture"));
        }
        z.read_exact(&mut word)?;
        let n = u64::from_le_bytes(word);
        if n > 1 << 24 {
            return Err(bad("meta too long"));
        }
        let mut meta = vec![0u8; n as usize];
        z.read_exact(&mut meta)?;
        let meta = String::from_utf8(meta).map_err(|_| bad("meta is not UTF-8"))?;
        z.read_exact(&mut word)?;
        let count = u64::from_le_bytes(word);
        let mut pages = BTreeMap::new();
        for _ in 0..count {
            z.read_exact(&mut word)?;
            let mut p = vec![0u8; PAGE as usize];
            z.read_exact(&mut p)?;
            pages.insert(u64::from_le_bytes(word), p.into_boxed_slice());
        }
        Ok((meta, pages))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::recorded::*;
    use super::*;

    pub(crate) fn replay(at: u64, bytes: &[u8]) -> Replay {
        let mut pages = PageMap::new();
        for (i, c) in bytes.chunks(PAGE as usize).enumerate() {
            let mut p = vec![0u8; PAGE as usize];
            p[..c.len()].copy_from_slice(c);
            pages.insert(at + i as u64 * PAGE, p.into_boxed_slice());
        }
        Replay { pages }
    }

    #[test]
    fn words() {
        let b = [1u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 7];
        assert_eq!(u64_at(&b, 0usize), 0xffff_ffff_0000_0001);
        assert_eq!(u32_at(&b, 4u64), u32::MAX);
        assert_eq!(i32_at(&b, 4usize), -1);
        assert_eq!(u64_at(&b, 2usize), 0, "past the end");
        assert_eq!(u64_at(&b, usize::MAX), 0);
    }

    #[test]
    fn cache_and_fixture_round_trip() {
        let at = 0x20_0000u64;
        let data: Vec<u8> = (0..3 * PAGE as usize).map(|i| (i % 251) as u8).collect();
        let src = replay(at, &data);
        let rec = Recorder::new(Pages::new(&src));
        // Across a page boundary: two pages recorded.
        let mut out = [0u8; 16];
        assert!(rec.read(at + PAGE - 8, &mut out));
        assert_eq!(&out[..], &data[PAGE as usize - 8..PAGE as usize + 8]);
        assert!(!rec.read(at + 3 * PAGE, &mut out));
        let pages = rec.pages();
        assert_eq!(pages.keys().copied().collect::<Vec<_>>(), [at, at + PAGE]);
        let mut file = Vec::new();
        save_pages(&mut file, "{\"x\":1}", &pages).unwrap();
        let (meta, back) = load_pages(&file[..]).unwrap();
        assert_eq!(meta, "{\"x\":1}");
        let replayed = Replay { pages: back };
        assert_eq!(replayed.u64(at + PAGE - 8), src.u64(at + PAGE - 8));
        assert_eq!(replayed.u64(at + PAGE), src.u64(at + PAGE));
        assert_ne!(src.u64(at + 8), Some(0));
        assert_eq!(
            replayed.u64(at + 8),
            Some(0),
            "a byte no one read is not kept"
        );
        assert_eq!(replayed.u64(at + 2 * PAGE), None, "not recorded");
        assert!(load_pages(&b"garbage"[..]).is_err());
    }
}
