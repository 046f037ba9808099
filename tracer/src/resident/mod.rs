//! Where a process's resident memory is: its resident size split into parts that sum to it,
//! read from outside at every census pass (never written, nothing injected). The kernel's view
//! (/proc/PID/smaps, pagemap) gives what is resident and what kind of mapping holds it; the
//! allocators' own structures, read without symbols, split the anonymous memory:
//! - CPython's small-object allocator (`pymalloc`): blocks in use vs resident free space in its
//!   pools (fragmentation: pymalloc keeps a pool, and an arena, while one object in it lives);
//! - glibc's malloc (`glibc`): chunks in use vs the resident pages of free chunks, and what
//!   `malloc_trim(0)` would give back; chunks mapped on their own (large buffers: numpy arrays);
//! - thread stacks (the mapping each thread's stack pointer is in), the static data that follows
//!   the libraries, and what nothing claims ("other anonymous": an extension's own allocator,
//!   anonymous `mmap`s, jemalloc).
//!
//! File-backed mappings (code, mapped files) and shared memory are counted from smaps.

pub mod glibc;
pub mod maps;
pub mod pymalloc;

use std::time::{Duration, Instant};

use maps::{Resident, Vma};

/// The parts of resident memory, in the order reports list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// Blocks of CPython's small-object allocator in use: objects of up to 512 bytes.
    SmallObjects,
    /// Resident pages of pymalloc's pools that hold no object (free blocks, empty pools).
    SmallFree,
    /// glibc malloc chunks in use: larger objects, CPython's raw allocations, extensions'.
    MallocInUse,
    /// Resident pages inside free malloc chunks (retained: fragmentation, or not trimmed yet).
    MallocFree,
    /// malloc chunks mapped on their own (large buffers).
    LargeBlocks,
    /// Anonymous memory no allocator above claims.
    OtherAnonymous,
    ThreadStacks,
    /// Code and static data: the interpreter, libraries, their .bss.
    Code,
    /// Files mapped into memory and shared memory.
    FilesShared,
}

impl Part {
    pub const ALL: [Part; 9] = [
        Part::SmallObjects,
        Part::SmallFree,
        Part::MallocInUse,
        Part::MallocFree,
        Part::LargeBlocks,
        Part::OtherAnonymous,
        Part::ThreadStacks,
        Part::Code,
        Part::FilesShared,
    ];

    /// A stable short name (report.json, metrics labels).
    pub fn key(self) -> &'static str {
        match self {
            Part::SmallObjects => "small_objects",
            Part::SmallFree => "small_object_free",
            Part::MallocInUse => "malloc_in_use",
            Part::MallocFree => "malloc_free",
            Part::LargeBlocks => "large_blocks",
            Part::OtherAnonymous => "other_anonymous",
            Part::ThreadStacks => "thread_stacks",
            Part::Code => "code_and_static_data",
            Part::FilesShared => "mapped_files_and_shared",
        }
    }

    /// What it is, in a user's words.
    pub fn label(self) -> &'static str {
        match self {
            Part::SmallObjects => "Python objects (small-object allocator, in use)",
            Part::SmallFree => "small-object allocator, free (kept by pymalloc)",
            Part::MallocInUse => "malloc heap, in use (large objects, buffers, native code)",
            Part::MallocFree => "malloc heap, free (retained by glibc)",
            Part::LargeBlocks => "large malloc blocks (mapped on their own)",
            Part::OtherAnonymous => "other anonymous memory (extension allocators, mmap)",
            Part::ThreadStacks => "thread stacks",
            Part::Code => "code and static data (interpreter, libraries)",
            Part::FilesShared => "mapped files and shared memory",
        }
    }
}

/// Resident memory split into parts, at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Breakdown {
    /// Resident bytes in all (the kernel's Rss).
    pub rss: u64,
    /// Bytes per part (they sum to `rss`).
    pub parts: Vec<(Part, u64)>,
    pub pools: pymalloc::Pools,
    pub heaps: glibc::Heaps,
    pub threads: u64,
    /// What could not be read, one line each.
    pub notes: Vec<String>,
    pub took: Duration,
}

impl Breakdown {
    pub fn get(&self, p: Part) -> u64 {
        self.parts
            .iter()
            .find(|(q, _)| *q == p)
            .map_or(0, |(_, b)| *b)
    }
}

/// What one process's reading keeps between passes.
#[derive(Debug, Default)]
pub struct Reader {
    /// pymalloc's pool size, once found.
    pool_size: Option<u64>,
    /// When the next reading may start: spaced so that it takes under 5% of a core (a heap of
    /// gigabytes takes a second to walk).
    next: Option<Instant>,
}

/// Is this a mapping of the kernel's, not the program's memory ([vdso], [uprobes]...)?
fn special(v: &Vma) -> bool {
    v.path.as_deref().is_some_and(|p| {
        p.starts_with('[') && p != "[heap]" && !p.starts_with("[stack") && !p.starts_with("[anon")
    })
}

/// Private anonymous memory of the program (the brk heap, stacks, allocators' mappings).
fn anonymous(v: &Vma) -> bool {
    !v.shared() && v.inode == 0 && !special(v) && v.readable()
}

/// The stack pointers of the process's threads that are blocked (a running thread shows
/// "running" in /proc/PID/task/TID/syscall).
fn stack_pointers(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let text = std::fs::read_to_string(e.ok()?.path().join("syscall")).ok()?;
        let sp = text.split_ascii_whitespace().nth(7)?;
        u64::from_str_radix(sp.trim_start_matches("0x"), 16).ok()
    })
    .collect()
}

impl Reader {
    /// Reads the process's breakdown, unless the last one was too recent for its cost.
    pub fn read(&mut self, pid: u32) -> Option<Breakdown> {
        if self.next.is_some_and(|n| Instant::now() < n) {
            return None;
        }
        let began = Instant::now();
        let b = self.read_now(pid);
        self.next = Some(began + (began.elapsed() * 20).min(Duration::from_secs(300)));
        b
    }

    fn read_now(&mut self, pid: u32) -> Option<Breakdown> {
        let began = Instant::now();
        let vmas = maps::smaps(pid).ok()?;
        let anon: Vec<&Vma> = vmas.iter().filter(|v| anonymous(v)).collect();
        // Residency first: no byte of the process is read before.
        let resident = Resident::read(pid, &anon).ok()?;
        let mut b = Breakdown {
            rss: vmas.iter().map(|v| v.rss).sum(),
            ..Breakdown::default()
        };
        // Stacks: the mappings the threads' stack pointers are in, `[stack]`, and a mapping
        // right above a small guard mapping (glibc's thread stacks, cached or running).
        let sps = stack_pointers(pid);
        b.threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        let mut stacks: Vec<(u64, u64)> = Vec::new();
        for (i, v) in vmas.iter().enumerate() {
            if !anonymous(v) || v.path.as_deref() == Some("[heap]") {
                continue;
            }
            let guarded = i > 0 && {
                let g = &vmas[i - 1];
                g.end == v.start && g.perms.starts_with("---") && g.len() <= 1 << 20 && g.inode == 0
            };
            let has_sp = sps.iter().any(|&sp| sp >= v.start && sp < v.end);
            if has_sp || guarded || v.path.as_deref().is_some_and(|p| p.starts_with("[stack")) {
                stacks.push((v.start, v.end));
            }
        }
        let in_stack = |v: &Vma| stacks.iter().any(|s| s.0 == v.start);
        // pymalloc's pools, in the anonymous memory that is neither the brk heap nor a stack.
        let scanned: Vec<&Vma> = anon
            .iter()
            .filter(|v| v.path.is_none() && !in_stack(v))
            .copied()
            .collect();
        b.pools = pymalloc::scan(pid, &scanned, &resident, self.pool_size);
        if b.pools.pools > 0 {
            self.pool_size = Some(b.pools.pool_size);
        }
        // malloc's heaps and large chunks, where pools and stacks are not.
        let mut taken: Vec<(u64, u64)> = b.pools.ranges.clone();
        taken.extend(stacks.iter().copied());
        let other_malloc = vmas.iter().find_map(|v| {
            let p = v.path.as_deref()?;
            ["libjemalloc", "libtcmalloc", "libmimalloc", "ld-musl"]
                .iter()
                .find(|m| p.contains(*m))
                .copied()
        });
        if let Some(m) = other_malloc {
            b.notes.push(format!(
                "the malloc heap is not read: {m} is loaded (glibc's malloc is not the one in use); its memory is in \"other anonymous memory\""
            ));
        } else {
            b.heaps = glibc::read(pid, &scanned_or_heap(&anon, &stacks), &resident, &taken);
            if b.heaps.partial {
                b.notes.push(
                    "the malloc heap changed while it was read: its split is approximate".into(),
                );
            }
        }
        // The parts: anonymous memory as the allocators claim it, the rest from smaps.
        let anon_resident: u64 = anon.iter().map(|v| resident.bytes(v.start, v.end)).sum();
        let stack_resident: u64 = stacks.iter().map(|s| resident.bytes(s.0, s.1)).sum();
        // Static data: the anonymous mapping right after a library's writable mapping (.bss),
        // where no allocator claimed it.
        let mut claimed: Vec<(u64, u64)> = b.pools.ranges.clone();
        claimed.extend(b.heaps.ranges.iter().copied());
        claimed.extend(stacks.iter().copied());
        claimed.sort_unstable();
        let mut bss = 0;
        for (i, v) in vmas.iter().enumerate() {
            if i == 0 || !anonymous(v) || v.path.is_some() {
                continue;
            }
            let f = &vmas[i - 1];
            if f.end == v.start && f.inode != 0 && f.writable() && !f.shared() {
                // Up to the first page an allocator claims.
                let end = claimed
                    .iter()
                    .filter(|c| c.1 > v.start && c.0 < v.end)
                    .map(|c| c.0.max(v.start))
                    .min()
                    .unwrap_or(v.end);
                if end > v.start {
                    bss += resident.bytes(v.start, end);
                }
            }
        }
        let small_used = b.pools.used.min(b.pools.resident);
        let heap_free = b.heaps.free_resident.min(b.heaps.resident);
        let allocators = b.pools.resident + b.heaps.resident + b.heaps.mmapped_resident;
        let other = anon_resident.saturating_sub(allocators + stack_resident + bss);
        let files: u64 = vmas.iter().filter(|v| !anonymous(v)).map(|v| v.rss).sum();
        let code: u64 = vmas
            .iter()
            .filter(|v| !anonymous(v) && !v.shared() && (v.inode != 0 || special(v)))
            .filter(|v| v.perms.contains('x') || is_library(v) || special(v))
            .map(|v| v.rss)
            .sum();
        b.parts = vec![
            (Part::SmallObjects, small_used),
            (Part::SmallFree, b.pools.resident - small_used),
            (Part::MallocInUse, b.heaps.resident - heap_free),
            (Part::MallocFree, heap_free),
            (Part::LargeBlocks, b.heaps.mmapped_resident),
            (Part::OtherAnonymous, other),
            (Part::ThreadStacks, stack_resident),
            (Part::Code, code + bss),
            (Part::FilesShared, files.saturating_sub(code)),
        ];
        // The kernel's Rss counts what pagemap says is resident (zero pages aside): any
        // difference (a mapping that changed between the two readings) goes to "other".
        let sum: u64 = b.parts.iter().map(|p| p.1).sum();
        if sum < b.rss {
            b.parts[5].1 += b.rss - sum;
        }
        b.rss = b.parts.iter().map(|p| p.1).sum();
        b.took = began.elapsed();
        Some(b)
    }
}

/// The mappings a malloc heap can be in: the brk heap and the anonymous mappings that are not
/// stacks.
fn scanned_or_heap<'a>(anon: &[&'a Vma], stacks: &[(u64, u64)]) -> Vec<&'a Vma> {
    anon.iter()
        .filter(|v| !stacks.iter().any(|s| s.0 == v.start))
        .copied()
        .collect()
}

/// A mapping of a shared library or of the interpreter (its data as well as its code).
fn is_library(v: &Vma) -> bool {
    v.path.as_deref().is_some_and(|p| {
        p.contains(".so")
            || p.rsplit('/')
                .next()
                .is_some_and(|b| b.starts_with("python"))
    })
}
