//! Decoding the objects of one census pass: dicts in every layout, lists, sets, instance
//! attributes (dict, managed dict or inline values), str. Every object is read through its type
//! (see `types`).

use super::types::{Kind, TypeCache, TypeInfo, INLINE_VALUES, MANAGED_DICT};
use crate::layouts::{DictLayout, Layout};
use crate::mem::{u64_at, Memory, Pages};
use crate::strings;

/// Entries of a dict read at most.
pub(super) const MAX_ENTRIES: u64 = 1 << 20;

/// 3.8-3.10: bytes per slot of a dict's index table of `size` slots.
fn legacy_index_bytes(size: u64) -> u64 {
    if size <= 0xff {
        1
    } else if size <= 0xffff {
        2
    } else if size <= 0xffff_ffff {
        4
    } else {
        8
    }
}

/// Reads objects of one pass.
pub(super) struct Reader<'a> {
    pub(super) mem: &'a Pages<'a>,
    pub(super) types: &'a mut TypeCache,
    pub(super) layout: &'static Layout,
}

impl Reader<'_> {
    pub(super) fn type_of(&mut self, obj: u64) -> Option<TypeInfo> {
        let ty = self.mem.u64(obj + self.layout.ob_type)?;
        self.types.get(self.mem, ty)
    }

    /// A str object's text (every compact kind; names are at most 200 code points).
    pub(super) fn string(&mut self, addr: u64) -> Option<String> {
        strings::py_string(self.mem, self.layout, addr, 200)
    }

    /// A dict's (key, value) pairs in insertion order.
    pub(super) fn dict_items(&mut self, d: u64) -> Vec<(u64, u64)> {
        self.dict_items_opt(d).unwrap_or_default()
    }

    pub(super) fn dict_items_opt(&mut self, d: u64) -> Option<Vec<(u64, u64)>> {
        let keys = self.mem.u64(d + self.layout.dict_keys)?;
        let values = self.mem.u64(d + self.layout.dict_values).unwrap_or(0);
        let (entries, n, esz, key_off, val_off) = self.keys_table(keys)?;
        let table = self.mem.bytes(entries, (n * esz) as usize)?;
        let vals = if values != 0 {
            let at = values + self.layout.values_header;
            Some(self.mem.bytes(at, n as usize * 8)?)
        } else {
            None
        };
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n as usize {
            let key = u64_at(&table, i * esz as usize + key_off);
            let val = match &vals {
                Some(v) => u64_at(v, i * 8),
                None => u64_at(&table, i * esz as usize + val_off),
            };
            if key != 0 && val != 0 {
                out.push((key, val));
            }
        }
        Some(out)
    }

    /// Where a PyDictKeysObject's entries are: (address, count, entry size, key and value
    /// offsets in an entry).
    fn keys_table(&mut self, keys: u64) -> Option<(u64, u64, u64, usize, usize)> {
        let k = self.layout.dict_keys_object;
        let h = self.mem.bytes(keys, k.indices as usize)?;
        let n = u64_at(&h, k.nentries);
        if self.layout.dict == DictLayout::Legacy {
            let size = u64_at(&h, k.size);
            if n > MAX_ENTRIES || size > 4 * MAX_ENTRIES || n > size {
                return None;
            }
            let e = k.general_entry;
            let entries = keys + k.indices + size * legacy_index_bytes(size);
            Some((entries, n, e.size, e.key as usize, e.value as usize))
        } else {
            let index_bytes = h[k.log2_index_bytes as usize] as u32;
            let kind = h[k.kind as usize];
            if n > MAX_ENTRIES || index_bytes > 40 {
                return None;
            }
            let entries = keys + k.indices + (1u64 << index_bytes);
            // DICT_KEYS_GENERAL: hash, key, value; unicode and split keys: key, value.
            let e = if kind == 0 {
                k.general_entry
            } else {
                k.unicode_entry
            };
            Some((entries, n, e.size, e.key as usize, e.value as usize))
        }
    }

    /// The size of a dict's own keys table (not shared with other dicts), as sys.getsizeof counts.
    pub(super) fn dict_keys_size(&mut self, d: u64) -> Option<u64> {
        let k = self.layout.dict_keys_object;
        let keys = self.mem.u64(d + self.layout.dict_keys)?;
        let h = self.mem.bytes(keys, k.indices as usize)?;
        if u64_at(&h, k.refcnt) != 1 || self.mem.u64(d + self.layout.dict_values)? != 0 {
            return Some(0); // shared (split) keys or values: counted elsewhere
        }
        let usable = |size: u64| size * 2 / 3;
        Some(if self.layout.dict == DictLayout::Legacy {
            let size = u64_at(&h, k.size).min(1 << 32);
            k.indices + size * legacy_index_bytes(size) + k.general_entry.size * usable(size)
        } else {
            let (log2_size, index_bytes, kind) = (
                h[k.size as usize] as u32,
                h[k.log2_index_bytes as usize] as u32,
                h[k.kind as usize],
            );
            if log2_size > 32 || index_bytes > 40 {
                return None;
            }
            let esz = if kind == 0 {
                k.general_entry.size
            } else {
                k.unicode_entry.size
            };
            k.indices + (1u64 << index_bytes) + esz * usable(1u64 << log2_size)
        })
    }

    /// An instance's attributes (name, value), from its dict or its inline values.
    pub(super) fn attributes(&mut self, obj: u64, t: &TypeInfo) -> Vec<(u64, u64)> {
        let l = self.layout;
        let dict_at = |o: u64, off: i64| (off > 0).then(|| o.wrapping_add(off as u64));
        let managed = t.flags & MANAGED_DICT != 0;
        let managed_dict = obj.wrapping_sub(l.managed_dict_before);
        let dict = match l.dict {
            DictLayout::Legacy => dict_at(obj, t.dictoffset).and_then(|a| self.mem.u64(a)),
            _ if !managed => dict_at(obj, t.dictoffset).and_then(|a| self.mem.u64(a)),
            DictLayout::Log2Prevalues => match self.mem.u64(managed_dict) {
                Some(0) => {
                    let at = obj.wrapping_sub(l.managed_values_before);
                    let v = self.mem.u64(at).unwrap_or(0);
                    return self.inline_values(obj, v);
                }
                d => d,
            },
            DictLayout::Log2Tagged => match self.mem.u64(managed_dict) {
                Some(w) if w & 1 == 1 => return self.inline_values(obj, w + 1),
                d => d,
            },
            DictLayout::Log2Inline => match self.mem.u64(managed_dict) {
                Some(0) if t.flags & INLINE_VALUES != 0 => {
                    let v = obj + t.basicsize;
                    let mut valid = [0u8; 1];
                    if !self.mem.read(v + l.values_valid, &mut valid) || valid[0] == 0 {
                        return Vec::new();
                    }
                    return self.inline_values(obj, v);
                }
                d => d,
            },
        };
        match dict {
            Some(d) if d != 0 => self.dict_items(d),
            _ => Vec::new(),
        }
    }

    /// Attributes kept as values outside a dict (3.11+), named by the type's shared keys.
    pub(super) fn inline_values(&mut self, obj: u64, values: u64) -> Vec<(u64, u64)> {
        (|| {
            if values == 0 {
                return None;
            }
            let ty = self.mem.u64(obj + self.layout.ob_type)?;
            let keys = self.mem.u64(ty + self.layout.ht_cached_keys?)?;
            let (entries, n, esz, key_off, _) = self.keys_table(keys)?;
            let table = self.mem.bytes(entries, (n * esz) as usize)?;
            let vals = self
                .mem
                .bytes(values + self.layout.values_header, n as usize * 8)?;
            Some(
                (0..n as usize)
                    .map(|i| {
                        (
                            u64_at(&table, i * esz as usize + key_off),
                            u64_at(&vals, i * 8),
                        )
                    })
                    .filter(|&(k, v)| k != 0 && v != 0)
                    .collect(),
            )
        })()
        .unwrap_or_default()
    }

    /// An object's keyed references one step below it (key object, value): a dict's items, a
    /// class's or an instance's attributes; and whether a key is written as `.attr` (else
    /// `["key"]`).
    pub(super) fn members(&mut self, obj: u64, t: &TypeInfo) -> Option<(Vec<(u64, u64)>, bool)> {
        match t.kind() {
            Kind::Dict => Some((self.dict_items(obj), false)),
            Kind::Type => Some((
                match self.mem.u64(obj + self.layout.tp_dict) {
                    Some(d) if d != 0 => self.dict_items(d),
                    _ => Vec::new(),
                },
                true,
            )),
            Kind::Other => Some((self.attributes(obj, t), true)),
            _ => None,
        }
    }

    /// A list's items (None when it is empty, longer than `max`, or unreadable).
    pub(super) fn list_items(&mut self, obj: u64, max: u64) -> Option<Vec<u64>> {
        let len = self.mem.u64(obj + self.layout.list_size)?;
        let items = self.mem.u64(obj + self.layout.list_items)?;
        if len == 0 || len > max {
            return None;
        }
        let b = self.mem.bytes(items, len as usize * 8)?;
        Some((0..len as usize).map(|i| u64_at(&b, i * 8)).collect())
    }

    /// The length of a list, dict or set, if it is sane (a list's within its allocated slots, a
    /// set's within its table, a dict's within what a dict can hold).
    pub(super) fn len_of(&mut self, obj: u64, kind: Kind) -> Option<u64> {
        let l = self.layout;
        match kind {
            Kind::List => {
                let n = self.mem.u64(obj + l.list_size)?;
                let allocated = self.mem.u64(obj + l.list_allocated)?;
                (n <= allocated && allocated < 1 << 40).then_some(n)
            }
            Kind::Dict => self.mem.u64(obj + l.dict_used).filter(|&n| n < 1 << 40),
            Kind::Set => {
                let n = self.mem.u64(obj + l.set_used)?;
                let mask = self.mem.u64(obj + l.set_mask)?;
                (mask < 1 << 40 && n <= mask + 1).then_some(n)
            }
            _ => None,
        }
    }
}
