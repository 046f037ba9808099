//! The contents of CPython's `str` and `bytes` objects, read from the target's memory with the
//! layout's offsets: the one `str` reader (every compact kind: ASCII, UCS1, UCS2, UCS4) shared
//! by frames, the census and watch-mode sampling.

use crate::layouts::Layout;
use crate::mem::{u32_at, u64_at, Memory};

/// PyASCIIObject.state (every version here): interned bits 0-1, kind bits 2-4 (bytes per code
/// point), compact bit 5, ascii bit 6.
const KIND_SHIFT: u32 = 2;
const KIND_MASK: u32 = 7;
const COMPACT: u32 = 1 << 5;
const ASCII: u32 = 1 << 6;

/// Bytes per code point of a str with this state (1, 2 or 4; 0 for a legacy string).
fn kind(state: u32) -> u32 {
    (state >> KIND_SHIFT) & KIND_MASK
}

/// A `str` object's text: compact ASCII, or compact UCS1 (Latin-1), UCS2 or UCS4; None for
/// anything else (a legacy string, a length above `max_len` code points, an unreadable one).
pub fn py_string(m: &dyn Memory, l: &Layout, addr: u64, max_len: u64) -> Option<String> {
    let head = m.bytes(addr, l.compact_data as usize)?;
    let len = u64_at(&head, l.unicode_length);
    let state = u32_at(&head, l.unicode_state);
    let kind = kind(state) as usize;
    let compact = state & COMPACT != 0;
    let ascii = state & ASCII != 0;
    if !compact || !matches!(kind, 1 | 2 | 4) || len > max_len {
        return None;
    }
    let data = if ascii { l.ascii_data } else { l.compact_data };
    let raw = m.bytes(addr + data, len as usize * kind)?;
    Some(match kind {
        1 => raw.iter().map(|&c| c as char).collect(),
        2 => char::decode_utf16(
            raw.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]])),
        )
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect(),
        _ => raw
            .chunks_exact(4)
            .map(|c| char::from_u32(u32_at(c, 0usize)).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
    })
}

/// A `bytes` object's contents (at most 1 MiB).
pub fn py_bytes(m: &dyn Memory, l: &Layout, addr: u64) -> Option<Vec<u8>> {
    let n = m.u64(addr + l.bytes_size)?;
    if n > 1 << 20 {
        return None;
    }
    m.bytes(addr + l.bytes_data, n as usize)
}

/// A `str` object's size (its header, its code points and the terminating one), from its state
/// and length, as sys.getsizeof says for a compact one.
pub fn str_size(l: &Layout, state: u32, len: u64) -> u64 {
    if state & ASCII != 0 {
        l.ascii_data + len + 1
    } else {
        l.compact_data + (len + 1) * u64::from(kind(state)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layouts::layout_for;
    use crate::mem::tests::replay;

    /// A compact str of each kind, laid out with the 3.12 layout's own offsets.
    #[test]
    fn strings_of_every_kind() {
        let l = layout_for(3, 12).unwrap();
        let at = 0x10_0000u64;
        let mut b = vec![0u8; 4096];
        let mut put = |off: usize, text: &str, kind: u32, ascii: bool| {
            let cps: Vec<u32> = text.chars().map(|c| c as u32).collect();
            let len = off + l.unicode_length as usize;
            b[len..len + 8].copy_from_slice(&(cps.len() as u64).to_le_bytes());
            let state = off + l.unicode_state as usize;
            let bits = (kind << KIND_SHIFT) | COMPACT | if ascii { ASCII } else { 0 };
            b[state..state + 4].copy_from_slice(&bits.to_le_bytes());
            let data = off + if ascii { l.ascii_data } else { l.compact_data } as usize;
            for (i, &c) in cps.iter().enumerate() {
                let k = kind as usize;
                b[data + i * k..data + (i + 1) * k].copy_from_slice(&c.to_le_bytes()[..k]);
            }
        };
        put(0, "cache", 1, true);
        put(256, "données", 1, false);
        put(512, "кэш", 2, false);
        put(768, "𝔡𝔞𝔱𝔞", 4, false);
        let m = replay(at, &b);
        assert_eq!(py_string(&m, l, at, 200).as_deref(), Some("cache"));
        assert_eq!(py_string(&m, l, at + 256, 200).as_deref(), Some("données"));
        assert_eq!(py_string(&m, l, at + 512, 200).as_deref(), Some("кэш"));
        assert_eq!(py_string(&m, l, at + 768, 200).as_deref(), Some("𝔡𝔞𝔱𝔞"));
        assert_eq!(py_string(&m, l, at + 768, 3), None, "longer than asked");
        assert_eq!(py_string(&m, l, at + 4000, 200), None, "runs off the pages");
        assert_eq!(
            str_size(l, COMPACT | ASCII | 1 << KIND_SHIFT, 5),
            l.ascii_data + 6
        );
        assert_eq!(
            str_size(l, COMPACT | 2 << KIND_SHIFT, 3),
            l.compact_data + 8
        );
    }
}
