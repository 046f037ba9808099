//! The line tables of code objects, in each version's format: an instruction's line.

/// 3.8/3.9 co_lnotab: (byte offset increment, signed line increment) pairs.
pub fn lnotab_line(tab: &[u8], first: i32, lasti: i32) -> Option<i32> {
    if lasti < 0 {
        return None;
    }
    let mut line = first;
    let mut addr = 0i32;
    for pair in tab.chunks_exact(2) {
        addr += pair[0] as i32;
        if addr > lasti {
            break;
        }
        line += pair[1] as i8 as i32;
    }
    Some(line)
}

/// 3.10 co_linetable (PEP 626): (byte length, signed line delta; -128 = no line) pairs.
pub fn pep626_line(tab: &[u8], first: i32, offset: i32) -> Option<i32> {
    if offset < 0 {
        return None;
    }
    let mut line = first;
    let mut start = 0i32;
    for pair in tab.chunks_exact(2) {
        let end = start + pair[0] as i32;
        let delta = pair[1] as i8;
        if delta != -128 {
            line += delta as i32;
        }
        if offset >= start && offset < end {
            return (delta != -128).then_some(line);
        }
        start = end;
    }
    None
}

/// 3.11+ location table: entries covering (n & 7) + 1 code units each.
pub fn location_line(tab: &[u8], first: i32, index: usize) -> Option<i32> {
    let mut p = 0usize;
    let mut line = first;
    let mut unit = 0usize;
    let varint = |p: &mut usize| -> u32 {
        let mut v = 0u32;
        let mut shift = 0;
        while let Some(&b) = tab.get(*p) {
            *p += 1;
            v |= ((b & 63) as u32) << shift;
            shift += 6;
            if b & 64 == 0 {
                break;
            }
        }
        v
    };
    let svarint = |p: &mut usize| -> i32 {
        let v = varint(p);
        if v & 1 != 0 {
            -((v >> 1) as i32)
        } else {
            (v >> 1) as i32
        }
    };
    while p < tab.len() {
        let head = tab[p];
        p += 1;
        let code = (head >> 3) & 15;
        let len = (head & 7) as usize + 1;
        let has_line = match code {
            15 => false,
            14 => {
                line += svarint(&mut p);
                varint(&mut p);
                varint(&mut p);
                varint(&mut p);
                true
            }
            13 => {
                line += svarint(&mut p);
                true
            }
            10..=12 => {
                line += (code - 10) as i32;
                p += 2;
                true
            }
            _ => {
                p += 1;
                true
            }
        };
        if index >= unit && index < unit + len {
            return has_line.then_some(line);
        }
        unit += len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnotab() {
        // line 10 at 0; +6 bytes -> line 11; +4 bytes -> line 13; negative delta -> line 12
        let tab = [6u8, 1, 4, 2, 8, (-1i8) as u8];
        assert_eq!(lnotab_line(&tab, 10, 0), Some(10));
        assert_eq!(lnotab_line(&tab, 10, 5), Some(10));
        assert_eq!(lnotab_line(&tab, 10, 6), Some(11));
        assert_eq!(lnotab_line(&tab, 10, 10), Some(13));
        assert_eq!(lnotab_line(&tab, 10, 18), Some(12));
        assert_eq!(lnotab_line(&tab, 10, -1), None);
    }

    #[test]
    fn pep626() {
        // [0,4): line 5 (+0 from first=5); [4,10): line 7; [10,12): no line; [12,14): line 8
        let tab = [4u8, 0, 6, 2, 2, 0x80, 2, 1];
        assert_eq!(pep626_line(&tab, 5, 0), Some(5));
        assert_eq!(pep626_line(&tab, 5, 4), Some(7));
        assert_eq!(pep626_line(&tab, 5, 9), Some(7));
        assert_eq!(pep626_line(&tab, 5, 10), None);
        assert_eq!(pep626_line(&tab, 5, 12), Some(8));
        assert_eq!(pep626_line(&tab, 5, 14), None);
    }

    #[test]
    fn locations() {
        // entry 1: no-columns (13), 1 unit, line +1  -> 0b1_1101_000 = 0xe8, svarint(+1)=2
        // entry 2: short form (0), 3 units, same line -> 0b1_0000_010 = 0x82, one column byte
        // entry 3: one-line form code 12 (+2 lines), 2 units -> 0b1_1100_001 = 0xe1, two bytes
        // entry 4: long form (14), 1 unit, line -3 -> 0xf0, svarint(-3)=7, end, col, endcol
        // entry 5: no location (15), 2 units -> 0xf9
        let tab = [0xe8, 2, 0x82, 5, 0xe1, 1, 9, 0xf0, 7, 0, 1, 1, 0xf9];
        assert_eq!(location_line(&tab, 20, 0), Some(21));
        assert_eq!(location_line(&tab, 20, 1), Some(21));
        assert_eq!(location_line(&tab, 20, 3), Some(21));
        assert_eq!(location_line(&tab, 20, 4), Some(23));
        assert_eq!(location_line(&tab, 20, 5), Some(23));
        assert_eq!(location_line(&tab, 20, 6), Some(20));
        assert_eq!(location_line(&tab, 20, 7), None);
        assert_eq!(location_line(&tab, 20, 9), None);
    }
}
