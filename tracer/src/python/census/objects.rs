//! Decoding the objects of one census pass: types (name, flags, sizes), dicts in every layout,
//! lists, sets, instance attributes (dict, managed dict or inline values), str, what the
//! newest items of a container are and weigh, and every reference an object's body holds (the
//! back-reference search). Every object is read through its type, and a type is trusted only if
//! it is one: its own type is `type` or a metaclass, its name printable, its size sane (a word
//! that is not an object, an int's value say, is never read as a container).

use std::collections::HashMap;

use super::backref::Via;
use crate::python::layouts::{DictLayout, Layout};
use crate::python::mem::{self, u64_at, Memory, Pages};
use crate::snapshot::census::Holds;

/// Entries of a dict read at most.
const MAX_ENTRIES: u64 = 1 << 20;
/// Items of a list, tuple or set read at most by the back-reference search.
const MAX_ITEMS: u64 = 1 << 24;
/// Bytes of a C object's body read at most by the back-reference search.
const MAX_BODY: u64 = 4096;
/// Items sampled (the newest) to say what a growing container holds.
const HOLD_SAMPLE: u64 = 16;
// Type flags (the same in every version here).
const INLINE_VALUES: u64 = 1 << 2;
const MANAGED_DICT: u64 = 1 << 4;
/// Py_TPFLAGS_HEAPTYPE: a class made by Python code (or a C extension's heap type).
const HEAPTYPE: u64 = 1 << 9;
/// Py_TPFLAGS_HAVE_GC: its objects carry the gc's header before them.
const HAVE_GC: u64 = 1 << 14;
const LIST_SUBCLASS: u64 = 1 << 25;
const DICT_SUBCLASS: u64 = 1 << 29;
const TUPLE_SUBCLASS: u64 = 1 << 26;
const TYPE_SUBCLASS: u64 = 1 << 31;

/// What the census needs of a type object.
#[derive(Debug, Clone)]
pub(super) struct TypeInfo {
    pub(super) name: String,
    flags: u64,
    pub(super) basicsize: u64,
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
    Tuple,
    Cell,
    /// A generator, coroutine or async generator (its frame's locals are roots).
    Generator,
    /// An asyncio task (the C accelerator's).
    Task,
    Other,
}

impl TypeInfo {
    /// A class (a heap type), not one of the interpreter's own types.
    pub(super) fn is_class(&self) -> bool {
        self.flags & HEAPTYPE != 0
    }

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
        } else if self.flags & TUPLE_SUBCLASS != 0 {
            Kind::Tuple
        } else if self.name == "cell" {
            Kind::Cell
        } else if matches!(
            self.name.as_str(),
            "generator" | "coroutine" | "async_generator"
        ) {
            Kind::Generator
        } else if self.name == "_asyncio.Task" {
            Kind::Task
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
    /// Runtime address of `PyType_Type`.
    type_type: u64,
    types: HashMap<u64, Option<TypeInfo>>,
}

impl TypeCache {
    pub(super) fn new(layout: &'static Layout, type_type: u64) -> TypeCache {
        TypeCache {
            layout,
            type_type,
            types: HashMap::new(),
        }
    }

    /// The type at `ty`, if it is one.
    pub(super) fn get(&mut self, mem: &dyn Memory, ty: u64) -> Option<TypeInfo> {
        if let Some(t) = self.types.get(&ty) {
            return t.clone();
        }
        let t = is_type(mem, self.layout, self.type_type, ty)
            .then(|| read_type(mem, self.layout, ty))
            .flatten();
        if self.types.len() < 100_000 {
            self.types.insert(ty, t.clone());
        }
        t
    }
}

/// Is the object at `ty` a type: is its type `type`, or a metaclass (a type whose type is, a few
/// steps up, `type`)?
pub(super) fn is_type(mem: &dyn Memory, l: &Layout, type_type: u64, ty: u64) -> bool {
    if !ty.is_multiple_of(8) || ty < 0x1000 {
        return false;
    }
    let mut t = ty;
    for _ in 0..4 {
        match mem.u64(t + l.ob_type) {
            Some(m) if m == type_type => return true,
            Some(m) if m % 8 == 0 && m >= 0x1000 => t = m,
            _ => return false,
        }
    }
    false
}

/// A type's name, flags and sizes, if they are sane: a printable name, a basic size between an
/// object header and 1 MiB.
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
    let basicsize = u64_at(&b, l.tp_basicsize);
    if name.is_empty()
        || !name.iter().all(|c| c.is_ascii_graphic())
        || !(16..=1 << 20).contains(&basicsize)
    {
        return None;
    }
    Some(TypeInfo {
        name: String::from_utf8_lossy(&name).into_owned(),
        flags: u64_at(&b, l.tp_flags),
        basicsize,
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

    /// What the newest items of a container are: their types and mean shallow size.
    pub(super) fn holds(&mut self, obj: u64, kind: Kind, len: u64) -> Option<Holds> {
        // Read fresh: the pages cached by the walk are older than what a growing container holds
        // now, and a table read half before and half after the container grew (a dict resized,
        // a list's item array moved) would describe freed memory. The newest items are read
        // twice, fresh each time, and only those found at the same place both times are counted
        // (an item is in the container, not in the memory a moved table left behind); the
        // container's table pointer must be the same after the items are read, or nothing is
        // said this pass.
        let table_at = match kind {
            Kind::List => obj + self.layout.list_items,
            Kind::Dict => obj + self.layout.dict_keys,
            _ => return None,
        };
        self.mem.clear();
        let table = self.mem.u64(table_at)?;
        let first = self.newest(obj, kind, len, table)?;
        self.mem.clear();
        if self.mem.u64(table_at)? != table {
            return None;
        }
        let second = self.newest(obj, kind, len, table)?;
        self.mem.forget(table_at, 8);
        if self.mem.u64(table_at)? != table {
            return None;
        }
        let items: Vec<(u64, u64)> = first
            .iter()
            .filter(|e| second.contains(e))
            .copied()
            .collect();
        // What the container spends per item: a list's pointer, a dict's entry (hash, key,
        // value; its index slot left out).
        let slot = match kind {
            Kind::List => 8,
            _ => 24,
        };
        let mut by: HashMap<String, u64> = HashMap::new();
        let mut bytes = 0u64;
        let mut deep = 0u64;
        let mut n = 0u64;
        // Objects the items refer to that something else holds too (interned strings, small
        // ints, one object in many items): counted once for the sample, apart.
        let mut shared: HashMap<u64, u64> = HashMap::new();
        for (place, it) in items {
            let Some(t) = self.type_of(it) else { continue };
            bytes += self.shallow_size(it, &t);
            deep += self.deep_size(it, &t, &mut shared) + slot;
            // A dict's key is its item's as much as the value (an lru_cache's arguments).
            if kind == Kind::Dict {
                if let Some(kt) = self.type_of(place) {
                    if self.refcount(place) == Some(1) {
                        deep += self.deep_size(place, &kt, &mut shared);
                    } else if let std::collections::hash_map::Entry::Vacant(e) = shared.entry(place)
                    {
                        e.insert(self.own_size(place, &kt));
                    }
                }
            }
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
            shared_bytes: shared.values().sum::<u64>() as f64,
        })
    }

    /// The newest items of a list or dict (with their place: list index, dict key), at most
    /// `HOLD_SAMPLE`, read through the item table at `table`.
    fn newest(&mut self, obj: u64, kind: Kind, len: u64, table: u64) -> Option<Vec<(u64, u64)>> {
        Some(match kind {
            Kind::List => {
                let now = self.len_of(obj, kind)?.min(len.max(1) * 2);
                let n = now.min(HOLD_SAMPLE);
                let b = self.mem.bytes(table + 8 * (now - n), 8 * n as usize)?;
                (0..n)
                    .map(|i| (now - n + i, u64_at(&b, 8 * i as usize)))
                    .collect()
            }
            _ => {
                let all = self.dict_items_opt(obj)?;
                let skip = all.len().saturating_sub(HOLD_SAMPLE as usize);
                all[skip..].to_vec()
            }
        })
    }

    /// What an item of a growing container costs, counted once: the item (its own size, the
    /// gc's header, an instance's pointers kept before it and its values array, the buffer it
    /// owns: a bytearray's, an array.array's, a BytesIO's, a numpy array's data when it owns
    /// it), and, followed up to four references deep, every object that only it holds
    /// (reference count 1: its dicts, lists, tuples, strings, numbers, instances). An object
    /// that something else holds too (interned strings, small ints, one object in many items,
    /// a Logger's parent, a numpy view's base) is not the item's: it goes to `shared`, once.
    /// Types, modules and functions are never followed.
    fn deep_size(&mut self, obj: u64, t: &TypeInfo, shared: &mut HashMap<u64, u64>) -> u64 {
        let mut total = 0;
        let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::from([obj]);
        let mut todo = vec![(obj, t.clone(), 0u32)];
        while let Some((o, ot, depth)) = todo.pop() {
            total += self.own_size(o, &ot);
            if depth >= 4 || seen.len() > 512 {
                continue;
            }
            let mut children: Vec<u64> = Vec::new();
            if ot.kind() == Kind::Dict {
                children.extend(self.dict_items(o).into_iter().flat_map(|(k, v)| [k, v]));
            } else {
                let mut refs = Vec::new();
                self.refs(o, &ot, &mut refs);
                children.extend(refs.into_iter().map(|r| r.0));
            }
            for c in children.into_iter().take(1024) {
                if !seen.insert(c) {
                    continue;
                }
                let Some(ct) = self.type_of(c) else { continue };
                if matches!(
                    ct.kind(),
                    Kind::Type | Kind::Module | Kind::Function | Kind::Generator
                ) {
                    continue;
                }
                if self.refcount(c) == Some(1) {
                    todo.push((c, ct, depth + 1));
                } else if let std::collections::hash_map::Entry::Vacant(e) = shared.entry(c) {
                    e.insert(self.own_size(c, &ct));
                }
            }
        }
        total
    }

    /// An object's reference count (the immortal ones of 3.12+ read as large).
    fn refcount(&mut self, obj: u64) -> Option<u64> {
        self.mem.u64(obj)
    }

    /// An object's own memory: its size, the gc's header before it, an instance's managed
    /// pointers and values, and the buffer it owns.
    fn own_size(&mut self, obj: u64, t: &TypeInfo) -> u64 {
        let l = self.layout;
        let mut total = self.shallow_size(obj, t) + self.owned_buffer(obj, t);
        if t.flags & HAVE_GC != 0 {
            total += l.gc_head_size;
        }
        if t.kind() == Kind::Other && t.flags & MANAGED_DICT != 0 && l.dict != DictLayout::Legacy {
            let attrs = self.attributes(obj, t).len() as u64;
            total += l.managed_dict_before + 8 * attrs;
        }
        total
    }

    /// The memory an object owns outside its own body: a bytearray's buffer (`ob_alloc`), an
    /// array.array's items, a BytesIO's bytes, an mmap's mapping, a numpy array's data (when it
    /// owns it: a view's data is its base's). Offsets of CPython's and numpy's own structs,
    /// the same in every version here (numpy 1.x and 2.x differ in where a dtype's item size is).
    fn owned_buffer(&mut self, obj: u64, t: &TypeInfo) -> u64 {
        const MAX: u64 = 1 << 40;
        let word = |s: &mut Self, off: u64| s.mem.u64(obj + off).unwrap_or(0);
        match t.name.as_str() {
            "bytearray" => word(self, 24).min(MAX),
            "array.array" => {
                let allocated = word(self, 32).min(MAX);
                let descr = word(self, 40);
                let itemsize = self
                    .mem
                    .bytes(descr + 4, 4)
                    .map(|b| u32::from_le_bytes(b[..4].try_into().unwrap()) as u64)
                    .unwrap_or(0);
                if itemsize == 0 || itemsize > 16 {
                    return 0;
                }
                allocated * itemsize
            }
            "_io.BytesIO" => {
                let buf = word(self, 16);
                match self.type_of(buf) {
                    Some(bt) if bt.name == "bytes" => self.shallow_size(buf, &bt),
                    _ => 0,
                }
            }
            "mmap.mmap" => word(self, 24).min(MAX),
            "numpy.ndarray" | "numpy.matrix" | "numpy.memmap" | "numpy.recarray" => {
                self.ndarray_data(obj).unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// The bytes of a numpy array's data when it owns them (OWNDATA), from its dimensions and
    /// its dtype's item size (numpy 2.x: an npy_intp at +40 of the descr; 1.x: an int at +32).
    fn ndarray_data(&mut self, obj: u64) -> Option<u64> {
        const OWNDATA: u64 = 0x4;
        let b = self.mem.bytes(obj + 16, 56)?;
        let nd = u64_at(&b, 8usize) as u32 as u64;
        let dims = u64_at(&b, 16usize);
        let descr = u64_at(&b, 40usize);
        let flags = u64_at(&b, 48usize) as u32 as u64;
        if flags & OWNDATA == 0 || nd > 64 {
            return Some(0);
        }
        let d = self.mem.bytes(descr, 48)?;
        let v2 = u64_at(&d, 40usize);
        let itemsize = if v2 > 0 && v2 <= 1 << 20 {
            v2
        } else {
            u64::from(mem::u32_at(&d, 32usize))
        };
        let mut n = itemsize;
        if nd > 0 {
            let dv = self.mem.bytes(dims, 8 * nd as usize)?;
            for i in 0..nd as usize {
                n = n.saturating_mul(u64_at(&dv, 8 * i));
            }
        }
        Some(n.min(1 << 40))
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

    /// Every reference the back-reference search follows out of `obj` (of type `t`): a dict's
    /// values, a list's or tuple's items, a set's entries, a cell's object, an instance's
    /// inline attributes and `__dict__` pointer, and, read conservatively, every pointer-like
    /// word of a C object's basic size (its fields, an instance's slots). Types and modules
    /// are not read here (their dicts are).
    pub(super) fn refs(&mut self, obj: u64, t: &TypeInfo, out: &mut Vec<(u64, Via)>) {
        let l = self.layout;
        match t.kind() {
            Kind::Dict => {
                out.extend(
                    self.dict_items(obj)
                        .into_iter()
                        .map(|(k, v)| (v, Via::Key(k))),
                );
            }
            Kind::List => {
                if let Some(items) = self.list_items(obj, MAX_ITEMS) {
                    out.extend(
                        items
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (v, Via::Item(i as u64))),
                    );
                }
            }
            Kind::Tuple => {
                let n = self.mem.u64(obj + l.var_size).unwrap_or(0);
                if n > 0 && n <= MAX_ITEMS {
                    if let Some(b) = self.mem.bytes(obj + l.tuple_items, 8 * n as usize) {
                        out.extend((0..n).map(|i| (u64_at(&b, 8 * i as usize), Via::Item(i))));
                    }
                }
            }
            Kind::Set => {
                let mask = self.mem.u64(obj + l.set_mask).unwrap_or(u64::MAX);
                let table = self.mem.u64(obj + l.set_table).unwrap_or(0);
                if mask < MAX_ITEMS {
                    // Entries: key, hash.
                    if let Some(b) = self.mem.bytes(table, 16 * (mask as usize + 1)) {
                        out.extend(
                            (0..=mask as usize)
                                .map(|i| u64_at(&b, 16 * i))
                                .filter(|&k| k != 0)
                                .map(|k| (k, Via::Member)),
                        );
                    }
                }
            }
            Kind::Cell => {
                if let Some(v) = self.mem.u64(obj + l.cell_ref) {
                    out.push((v, Via::Field(l.cell_ref)));
                }
            }
            Kind::Type | Kind::Module => {}
            Kind::Function | Kind::Generator | Kind::Task | Kind::Other => {
                let size = t.basicsize.min(MAX_BODY);
                if let Some(b) = self.mem.bytes(obj, size as usize) {
                    for off in (16..size).step_by(8) {
                        let w = u64_at(&b, off);
                        if w < 0x1000 || w % 8 != 0 {
                            continue;
                        }
                        if off as i64 == t.dictoffset {
                            out.push((w, Via::Dict(off as i64)));
                        } else {
                            out.push((w, Via::Field(off)));
                        }
                    }
                }
                if t.flags & MANAGED_DICT != 0 && l.dict != DictLayout::Legacy {
                    self.managed_refs(obj, t, out);
                }
            }
        }
    }

    /// 3.11+: an instance's managed `__dict__`, or its inline attribute values.
    fn managed_refs(&mut self, obj: u64, t: &TypeInfo, out: &mut Vec<(u64, Via)>) {
        let l = self.layout;
        let at = obj.wrapping_sub(l.managed_dict_before);
        let dict = Via::Dict(-(l.managed_dict_before as i64));
        let Some(w) = self.mem.u64(at) else { return };
        let values = match l.dict {
            DictLayout::Log2Prevalues if w == 0 => {
                let v = obj.wrapping_sub(l.managed_values_before);
                self.mem.u64(v).unwrap_or(0)
            }
            DictLayout::Log2Tagged if w & 1 == 1 => w + 1,
            DictLayout::Log2Inline if w == 0 && t.flags & INLINE_VALUES != 0 => {
                let v = obj + t.basicsize;
                let mut valid = [0u8; 1];
                if !self.mem.read(v + l.values_valid, &mut valid) || valid[0] == 0 {
                    return;
                }
                v
            }
            _ => {
                if w != 0 {
                    out.push((w, dict));
                }
                return;
            }
        };
        out.extend(
            self.inline_values(obj, values)
                .into_iter()
                .map(|(k, v)| (v, Via::Attr(k))),
        );
    }

    /// Does `holder` refer to `held` that way now (read as it is, the caller clears the cache
    /// for a fresh look)? Both must be objects of real types.
    pub(super) fn holds_ref(&mut self, holder: u64, via: Via, held: u64) -> bool {
        let (Some(t), Some(_)) = (self.type_of(holder), self.type_of(held)) else {
            return false;
        };
        let l = self.layout;
        match via {
            Via::Key(k) => t.kind() == Kind::Dict && self.dict_items(holder).contains(&(k, held)),
            Via::Attr(k) => self
                .members(holder, &t)
                .is_some_and(|(m, _)| m.contains(&(k, held))),
            Via::Dict(off) => {
                let w = self.mem.u64(holder.wrapping_add(off as u64));
                w == Some(held)
            }
            Via::Item(i) => match t.kind() {
                Kind::List => self
                    .list_items(holder, MAX_ITEMS)
                    .is_some_and(|v| v.get(i as usize) == Some(&held)),
                Kind::Tuple => {
                    let n = self.mem.u64(holder + l.var_size).unwrap_or(0);
                    i < n && self.mem.u64(holder + l.tuple_items + 8 * i) == Some(held)
                }
                _ => false,
            },
            Via::Member => {
                let mut refs = Vec::new();
                self.refs(holder, &t, &mut refs);
                t.kind() == Kind::Set && refs.iter().any(|r| r.0 == held)
            }
            Via::Field(off) => off < t.basicsize && self.mem.u64(holder + off) == Some(held),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::layouts::layout_for;
    use crate::python::mem::recorded::{PageMap, Replay};
    use crate::python::mem::PAGE;

    /// One page of made-up objects at 0x10000: `type` (its own type), a class `Node` whose
    /// type is `type`, a list of class `Node`... and words that are not objects.
    fn memory(words: &[(u64, u64)], name_at: u64, name: &[u8]) -> Replay {
        let mut p = vec![0u8; PAGE as usize];
        for &(at, w) in words {
            let o = (at - 0x10000) as usize;
            p[o..o + 8].copy_from_slice(&w.to_le_bytes());
        }
        let o = (name_at - 0x10000) as usize;
        p[o..o + name.len()].copy_from_slice(name);
        let mut pages = PageMap::new();
        pages.insert(0x10000, p.into_boxed_slice());
        Replay { pages }
    }

    #[test]
    fn only_types_are_read_as_types() {
        let l = layout_for(3, 12).unwrap();
        let type_type = 0x10000;
        let class = 0x10400;
        let name = 0x10f00;
        let m = memory(
            &[
                (type_type + l.ob_type, type_type),
                (class + l.ob_type, type_type),
                (class + l.tp_name, name),
                (class + l.tp_basicsize, 48),
                // A "type" whose type is an int's value: not a type.
                (0x10800 + l.ob_type, 0x4242),
                (0x10800 + l.tp_name, name),
                (0x10800 + l.tp_basicsize, 48),
            ],
            name,
            b"Node",
        );
        let mut types = TypeCache::new(l, type_type);
        assert_eq!(types.get(&m, class).map(|t| t.name), Some("Node".into()));
        assert!(types.get(&m, 0x10800).is_none());
        assert!(types.get(&m, 0x10801).is_none());
        // A type with a binary name, or an absurd size, is not one either.
        let m = memory(
            &[
                (type_type + l.ob_type, type_type),
                (class + l.ob_type, type_type),
                (class + l.tp_name, name),
                (class + l.tp_basicsize, 48),
            ],
            name,
            b"\x01\xfe",
        );
        assert!(TypeCache::new(l, type_type).get(&m, class).is_none());
    }
}
