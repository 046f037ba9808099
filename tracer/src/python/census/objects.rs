//! Decoding the objects of one census pass: types (name, flags, sizes), dicts in every layout,
//! lists, sets, instance attributes (dict, managed dict or inline values), str, and what the
//! newest items of a container are and weigh.

use std::collections::HashMap;

use crate::python::layouts::{DictLayout, Layout};
use crate::python::mem::{self, u64_at, Memory, Pages};
use crate::snapshot::census::Holds;

/// Entries of a dict read at most.
const MAX_ENTRIES: u64 = 1 << 20;
/// Items sampled (the newest) to say what a growing container holds.
const HOLD_SAMPLE: u64 = 16;
// Type flags (the same in every version here).
const INLINE_VALUES: u64 = 1 << 2;
const MANAGED_DICT: u64 = 1 << 4;
const LIST_SUBCLASS: u64 = 1 << 25;
const DICT_SUBCLASS: u64 = 1 << 29;
const TYPE_SUBCLASS: u64 = 1 << 31;

/// What the census needs of a type object.
#[derive(Debug, Clone)]
pub(super) struct TypeInfo {
    pub(super) name: String,
    flags: u64,
    basicsize: u64,
    dictoffset: i64,
}

/// The kinds of objects the census tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    List,
    Dict,
    Set,
    Module,
    Type,
    Function,
    Other,
}

impl TypeInfo {
    pub(super) fn kind(&self) -> Kind {
        if self.flags & LIST_SUBCLASS != 0 {
            Kind::List
        } else if self.flags & DICT_SUBCLASS != 0 {
            Kind::Dict
        } else if self.flags & TYPE_SUBCLASS != 0 {
            Kind::Type
        } else if self.name == "set" || self.name == "frozenset" {
            Kind::Set
        } else if self.name == "module" {
            Kind::Module
        } else if self.name == "function" {
            Kind::Function
        } else {
            Kind::Other
        }
    }
}

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

/// Types read once per pass, by address.
pub(super) struct TypeCache {
    layout: &'static Layout,
    types: HashMap<u64, Option<TypeInfo>>,
}

impl TypeCache {
    pub(super) fn new(layout: &'static Layout) -> TypeCache {
        TypeCache {
            layout,
            types: HashMap::new(),
        }
    }

    pub(super) fn get(&mut self, mem: &dyn Memory, ty: u64) -> Option<TypeInfo> {
        if let Some(t) = self.types.get(&ty) {
            return t.clone();
        }
        let t = read_type(mem, self.layout, ty);
        self.types.insert(ty, t.clone());
        t
    }
}

fn read_type(mem: &dyn Memory, l: &Layout, ty: u64) -> Option<TypeInfo> {
    let span = [l.tp_name, l.tp_flags, l.tp_basicsize, l.tp_dictoffset]
        .into_iter()
        .max()
        .unwrap()
        + 8;
    let b = mem.bytes(ty, span as usize)?;
    let name_at = u64_at(&b, l.tp_name);
    let mut name = Vec::new();
    let mut a = name_at;
    while name.len() < 120 {
        let mut c = [0u8; 1];
        if !mem.read(a, &mut c) || c[0] == 0 {
            break;
        }
        name.push(c[0]);
        a += 1;
    }
    if name.is_empty() {
        return None;
    }
    Some(TypeInfo {
        name: String::from_utf8_lossy(&name).into_owned(),
        flags: u64_at(&b, l.tp_flags),
        basicsize: u64_at(&b, l.tp_basicsize),
        dictoffset: u64_at(&b, l.tp_dictoffset) as i64,
    })
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
        mem::py_string(self.mem, self.layout, addr, 200)
    }

    /// A dict's (key, value) pairs in insertion order.
    pub(super) fn dict_items(&mut self, d: u64) -> Vec<(u64, u64)> {
        self.dict_items_opt(d).unwrap_or_default()
    }

    fn dict_items_opt(&mut self, d: u64) -> Option<Vec<(u64, u64)>> {
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
    fn dict_keys_size(&mut self, d: u64) -> Option<u64> {
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
    fn attributes(&mut self, obj: u64, t: &TypeInfo) -> Vec<(u64, u64)> {
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
    fn inline_values(&mut self, obj: u64, values: u64) -> Vec<(u64, u64)> {
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

    /// The length of a list, dict or set.
    pub(super) fn len_of(&mut self, obj: u64, kind: Kind) -> Option<u64> {
        match kind {
            Kind::List => self.mem.u64(obj + self.layout.list_size),
            Kind::Dict => self.mem.u64(obj + self.layout.dict_used),
            Kind::Set => self.mem.u64(obj + self.layout.set_used),
            _ => None,
        }
    }

    /// What the newest items of a container are: their types and mean shallow size.
    pub(super) fn holds(&mut self, obj: u64, kind: Kind, len: u64) -> Option<Holds> {
        // Read fresh: the pages cached by the walk are older than what a growing container holds
        // now, and a table read half before and half after the container grew (a dict resized,
        // a list's item array moved) would describe freed memory. The container's table pointer
        // must be the same after the items are read, or nothing is said this pass.
        self.mem.clear();
        let table_at = match kind {
            Kind::List => obj + self.layout.list_items,
            Kind::Dict => obj + self.layout.dict_keys,
            _ => return None,
        };
        let table = self.mem.u64(table_at)?;
        let items: Vec<u64> = match kind {
            Kind::List => {
                let len = self
                    .mem
                    .u64(obj + self.layout.list_size)?
                    .min(len.max(1) * 2);
                let n = len.min(HOLD_SAMPLE);
                let b = self.mem.bytes(table + 8 * (len - n), 8 * n as usize)?;
                (0..n as usize).map(|i| u64_at(&b, i * 8)).collect()
            }
            _ => {
                let all = self.dict_items(obj);
                let skip = all.len().saturating_sub(HOLD_SAMPLE as usize);
                all[skip..].iter().map(|e| e.1).collect()
            }
        };
        self.mem.forget(table_at, 8);
        if self.mem.u64(table_at)? != table {
            return None;
        }
        let mut by: HashMap<String, u64> = HashMap::new();
        let mut bytes = 0u64;
        let mut deep = 0u64;
        let mut n = 0u64;
        for it in items {
            let Some(t) = self.type_of(it) else { continue };
            let own = self.shallow_size(it, &t);
            bytes += own;
            deep += own + self.atomic_children_size(it, &t);
            *by.entry(t.name).or_default() += 1;
            n += 1;
        }
        if n == 0 {
            return None;
        }
        let mut types: Vec<(String, u64)> = by.into_iter().collect();
        types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Some(Holds {
            sampled: n,
            types,
            mean_bytes: bytes as f64 / n as f64,
            mean_deep_bytes: deep as f64 / n as f64,
        })
    }

    /// The size of the str, bytes, int and float objects a dict, list or tuple holds directly.
    fn atomic_children_size(&mut self, obj: u64, t: &TypeInfo) -> u64 {
        let children: Vec<u64> = match (t.kind(), t.name.as_str()) {
            (Kind::Dict, _) => self.dict_items(obj).into_iter().map(|e| e.1).collect(),
            (Kind::List, _) | (_, "tuple") => {
                // list ob_size and tuple ob_size are both PyVarObject.ob_size.
                let len = self
                    .mem
                    .u64(obj + self.layout.var_size)
                    .unwrap_or(0)
                    .min(256);
                let at = if t.kind() == Kind::List {
                    self.mem.u64(obj + self.layout.list_items).unwrap_or(0)
                } else {
                    obj + self.layout.tuple_items
                };
                let b = self.mem.bytes(at, 8 * len as usize).unwrap_or_default();
                (0..len as usize).map(|i| u64_at(&b, 8 * i)).collect()
            }
            _ => return 0,
        };
        let mut total = 0;
        for c in children.into_iter().take(256) {
            if let Some(ct) = self.type_of(c) {
                if matches!(ct.name.as_str(), "str" | "bytes" | "int" | "float") {
                    total += self.shallow_size(c, &ct);
                }
            }
        }
        total
    }

    /// An object's own size, as sys.getsizeof would roughly say (without the gc header).
    fn shallow_size(&mut self, obj: u64, t: &TypeInfo) -> u64 {
        let l = self.layout;
        let var = self.mem.u64(obj + l.var_size).unwrap_or(0).min(1 << 32);
        match t.name.as_str() {
            "str" => {
                let state = self.mem.u64(obj + l.unicode_state).unwrap_or(0) as u32;
                let len = self
                    .mem
                    .u64(obj + l.unicode_length)
                    .unwrap_or(0)
                    .min(1 << 32);
                if state & (1 << 6) != 0 {
                    l.ascii_data + len + 1
                } else {
                    l.compact_data + (len + 1) * u64::from((state >> 2) & 7).max(1)
                }
            }
            "bytes" => l.bytes_data + var + 1,
            "tuple" => t.basicsize + 8 * var,
            "int" => t.basicsize + 4 * var.min(1 << 16),
            "list" => {
                let allocated = self.mem.u64(obj + l.list_allocated).unwrap_or(0);
                t.basicsize + 8 * allocated.min(1 << 32)
            }
            "dict" => t.basicsize + self.dict_keys_size(obj).unwrap_or(0),
            _ => t.basicsize,
        }
    }
}
