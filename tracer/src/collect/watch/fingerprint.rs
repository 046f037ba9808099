//! A survivor's fingerprint: the first words of the block a watch window saw, and whether the
//! block still holds that object when it is read again (see the module above).
//!
//! Only blocks that hold a Python object are fingerprinted: a buffer (a list's item array, a
//! dict's key table) has no header that says whether it still lives, and a block freed between
//! the end of the window and the fingerprint would look alive until reused. The objects of a leak
//! carry its line; their buffers follow them.

use crate::python::mem::{self, Memory};

/// Words read and compared per survivor.
pub const WORDS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// Word holding the object's reference count (its type is the next one): 0 for a plain
    /// object, 2 after the GC header, 4 after the pre-header of 3.11+ instances.
    pub refcnt: usize,
    pub words: [u64; WORDS],
    /// Words that belong to the block (its size / 8, at most WORDS).
    pub n: usize,
}

fn refcnt_like(v: u64) -> bool {
    // Real counts, and the immortal counts of 3.12+ (2^30 - 1, 2^32 - 1), are far below any
    // user-space pointer (free-list links) and above zero (a deallocated object).
    (1..1u64 << 40).contains(&v)
}

/// The first WORDS little-endian words of `bytes` (0 past its end).
pub fn words_of(bytes: &[u8]) -> [u64; WORDS] {
    std::array::from_fn(|i| {
        if 8 * i + 8 <= bytes.len() {
            mem::u64_at(bytes, 8 * i)
        } else {
            0
        }
    })
}

/// The words of the block at `addr` now (`n` of them, at most WORDS), read from the target.
pub fn read_words(m: &dyn Memory, addr: u64, n: usize) -> Option<[u64; WORDS]> {
    m.bytes(addr, 8 * n.min(WORDS)).map(|b| words_of(&b))
}

/// Fingerprints a block of `size` bytes that holds a live Python object. `is_type` tells
/// whether an address is a Python type object. None for anything else (see the module notes).
pub fn fingerprint(bytes: &[u8], size: u64, is_type: impl Fn(u64) -> bool) -> Option<Fingerprint> {
    let n = ((size / 8) as usize).min(WORDS).min(bytes.len() / 8);
    let words = words_of(bytes);
    let refcnt = [0usize, 2, 4]
        .into_iter()
        .find(|&r| r + 1 < n && refcnt_like(words[r]) && is_type(words[r + 1]))?;
    Some(Fingerprint { refcnt, words, n })
}

/// Does the block still hold the object that was fingerprinted?
pub fn alive(fp: &Fingerprint, now: &[u64; WORDS]) -> bool {
    // GC links and pre-header words change while the object lives; its count too. A cached
    // hash computed after the fingerprint (-1 until then) is not a change of object.
    refcnt_like(now[fp.refcnt])
        && (fp.refcnt + 1..fp.n).all(|j| now[j] == fp.words[j] || fp.words[j] == u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STR_TYPE: u64 = 0x7f00_0000_1000;
    const DICT_TYPE: u64 = 0x7f00_0000_2000;

    fn is_type(a: u64) -> bool {
        a == STR_TYPE || a == DICT_TYPE
    }

    fn bytes(w: &[u64]) -> Vec<u8> {
        w.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn plain_object_lives_until_freed() {
        // refcnt, type, length, hash (-1), state, data...
        let live = [1, STR_TYPE, 250, u64::MAX, 0xe4, 0x3030, 0x3131, 0x3232];
        let fp = fingerprint(&bytes(&live), 299, is_type).unwrap();
        assert_eq!(fp.refcnt, 0);
        let mut now = live;
        now[0] = 3; // more references
        now[3] = 0x1234; // hash computed since
        assert!(alive(&fp, &now));
        // pymalloc free: a free-list link over the count
        let mut freed = live;
        freed[0] = 0x7f12_3456_7000;
        assert!(!alive(&fp, &freed));
        freed[0] = 0; // last block of the free list
        assert!(!alive(&fp, &freed));
        // reused by another string of the same size
        let mut other = live;
        other[5] = 0x3939;
        assert!(!alive(&fp, &other));
    }

    #[test]
    fn gc_object_ignores_its_links() {
        // gc_next, gc_prev, refcnt, type, ma_used, version, keys, values
        let live = [
            0x5555_0000_0010,
            0x5555_0000_0020,
            1,
            DICT_TYPE,
            3,
            77,
            0x5555_0000_9000,
            0,
        ];
        let fp = fingerprint(&bytes(&live), 64, is_type).unwrap();
        assert_eq!(fp.refcnt, 2);
        let mut moved = live;
        moved[0] = 0x5555_0000_0030; // moved to another generation
        assert!(alive(&fp, &moved));
        let mut dead = live;
        dead[0] = 0x5555_0000_0040; // free-list link
        dead[2] = 0; // deallocated: count reached zero
        assert!(!alive(&fp, &dead));
    }

    #[test]
    fn buffers_and_freed_blocks_are_not_fingerprinted() {
        // a list's item array: pointers, no object header
        let items = [
            0x5555_0000_1000,
            0x5555_0000_2000,
            0x5555_0000_3000,
            0,
            0,
            0,
            0,
            0,
        ];
        assert!(fingerprint(&bytes(&items), 400, is_type).is_none());
        // a string freed into glibc's tcache: mangled link (looks like a count), then its key
        let freed = [
            0x5_5555_5555,
            0x1234_5678_9abc_def0,
            700,
            u64::MAX,
            0xe4,
            0,
            0,
            0,
        ];
        assert!(fingerprint(&bytes(&freed), 748, is_type).is_none());
        // too small to hold a header
        let live = [1, STR_TYPE, 1, u64::MAX, 0, 0, 0, 0];
        assert!(fingerprint(&bytes(&live), 8, is_type).is_none());
        // only the words inside the block count
        let fp = fingerprint(&bytes(&live), 16, is_type).unwrap();
        let mut beyond = live;
        beyond[4] = 9;
        assert!(alive(&fp, &beyond));
    }
}
