//! Reading and deleting BPF hash map entries in batches. aya 0.14 walks a map key by key (two
//! syscalls per entry: a million outstanding allocations cost two million syscalls per read);
//! BPF_MAP_LOOKUP_BATCH copies thousands of entries per syscall, and BPF_MAP_DELETE_BATCH
//! removes thousands of keys per syscall. Both are plain bpf(2) commands on the map's fd (aya
//! 0.14 has no wrapper); when the kernel refuses them, aya's own calls do the work.

use std::collections::HashSet;
use std::hash::Hash;
use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use aya::Pod;

/// Entries per lookup syscall (a hash bucket larger than this doubles it).
const BATCH: usize = 8192;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h). The kernel zero-fills the
/// part of the union past the size passed.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// bpf(2) with a batch command; Err(errno) on failure, the attribute updated by the kernel.
fn bpf_batch(cmd: libc::c_long, attr: &mut BatchAttr) -> Result<(), i32> {
    // SAFETY: `attr` is a valid, initialized `BatchAttr` of the size passed; the pointers it
    // holds (set by the callers) point at buffers of `count` keys (and values) of the map's
    // key and value sizes, and at 8-byte batch tokens, all live for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

fn map_fd(map: &Map) -> Option<u32> {
    let data: &MapData = match map {
        Map::HashMap(d) | Map::LruHashMap(d) => d,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd() as u32)
}

/// Reads the `i`-th value of type T from a byte buffer of them.
fn read_at<T: Pod>(buf: &[u8], i: usize) -> T {
    let size = std::mem::size_of::<T>();
    assert!((i + 1) * size <= buf.len());
    // SAFETY: in bounds (checked above); T is Pod (any bit pattern is a valid T), the read is
    // unaligned-safe.
    unsafe { std::ptr::read_unaligned(buf.as_ptr().add(i * size) as *const T) }
}

/// Calls `f` with every entry of a hash map (key type K, value type V); returns the number of
/// entries. Batched when the kernel can (each entry seen once: a hash map is walked bucket by
/// bucket); else aya's iterator, whose walk restarts when the key it stands on is deleted
/// meanwhile (the keys seen are remembered to skip the repeats; the walk is bounded).
pub fn for_each<K: Pod + Eq + Hash, V: Pod>(map: Option<&Map>, mut f: impl FnMut(&K, &V)) -> u64 {
    let Some(map) = map else { return 0 };
    // aya checks the map's type and its key and value sizes (the batches' strides).
    let Ok(h) = BpfHashMap::<&MapData, K, V>::try_from(map) else {
        return 0;
    };
    if let Some(fd) = map_fd(map) {
        match lookup_batched::<K, V>(fd, &mut f) {
            Ok(n) => return n,
            Err(Partial(n)) if n > 0 => return n,
            Err(_) => {} // refused from the start: the iterator below
        }
    }
    let mut seen = HashSet::new();
    let limit = 4 * 1024 * 1024;
    for (k, v) in h.iter().take(limit).flatten() {
        if seen.insert(k) {
            f(&k, &v);
        }
    }
    seen.len() as u64
}

/// A batched walk that failed after this many entries.
struct Partial(u64);

fn lookup_batched<K: Pod, V: Pod>(fd: u32, f: &mut impl FnMut(&K, &V)) -> Result<u64, Partial> {
    let (ks, vs) = (std::mem::size_of::<K>(), std::mem::size_of::<V>());
    let mut n = BATCH;
    let mut keys = vec![0u8; n * ks];
    let mut values = vec![0u8; n * vs];
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    let mut total = 0u64;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut token_in as *mut u64 as u64
            },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: n as u32,
            map_fd: fd,
            ..Default::default()
        };
        let r = bpf_batch(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let got = (attr.count as usize).min(n);
        match r {
            Ok(()) | Err(libc::ENOENT) => {
                for i in 0..got {
                    f(&read_at::<K>(&keys, i), &read_at::<V>(&values, i));
                }
                total += got as u64;
                if r.is_err() {
                    return Ok(total); // ENOENT: past the last bucket
                }
                token_in = token_out;
                first = false;
            }
            // One bucket holds more entries than the buffer: a larger buffer, same bucket.
            Err(libc::ENOSPC) if n < (1 << 20) => {
                n *= 2;
                keys = vec![0u8; n * ks];
                values = vec![0u8; n * vs];
            }
            Err(_) => return Err(Partial(total)),
        }
    }
}

/// Deletes keys from a hash map (key type K, value type V), thousands per syscall; keys already
/// gone are skipped. Returns how many were deleted.
pub fn delete<K: Pod, V: Pod>(map: Option<&mut Map>, keys: &[K]) -> u64 {
    let Some(map) = map else { return 0 };
    if BpfHashMap::<&MapData, K, V>::try_from(&*map).is_err() {
        return 0; // not a hash map of these types
    }
    if let Some(fd) = map_fd(map) {
        if let Some(n) = delete_batched(fd, keys) {
            return n;
        }
    }
    let Ok(mut h) = BpfHashMap::<&mut MapData, K, V>::try_from(map) else {
        return 0;
    };
    keys.iter().filter(|k| h.remove(k).is_ok()).count() as u64
}

/// None when the kernel refuses batched deletion from the start.
fn delete_batched<K: Pod>(fd: u32, keys: &[K]) -> Option<u64> {
    let mut done = 0u64;
    let mut at = 0usize;
    while at < keys.len() {
        let chunk = &keys[at..(at + BATCH).min(keys.len())];
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd,
            ..Default::default()
        };
        let r = bpf_batch(BPF_MAP_DELETE_BATCH, &mut attr);
        let deleted = (attr.count as usize).min(chunk.len());
        match r {
            Ok(()) => {
                done += chunk.len() as u64;
                at += chunk.len();
            }
            // The key at `deleted` is gone already (freed meanwhile): skip it.
            Err(libc::ENOENT) => {
                done += deleted as u64;
                at += deleted + 1;
            }
            Err(_) if at == 0 && deleted == 0 => return None,
            Err(_) => return Some(done),
        }
    }
    Some(done)
}
