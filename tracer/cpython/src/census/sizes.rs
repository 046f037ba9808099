//! What the newest items of a growing container are and weigh: their types, their own sizes,
//! and what each alone holds (followed a few references deep).

use std::collections::HashMap;

use super::facts::Holds;
use super::objects::Reader;
use super::types::{Kind, TypeInfo, HAVE_GC, MANAGED_DICT};
use crate::layouts::DictLayout;
use crate::mem::{self, u64_at, Memory};
use crate::strings;

/// Items sampled (the newest) to say what a growing container holds.
const HOLD_SAMPLE: u64 = 16;

impl Reader<'_> {
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
    /// owns it: a view's data is its base's).
    fn owned_buffer(&mut self, obj: u64, t: &TypeInfo) -> u64 {
        const MAX: u64 = 1 << 40;
        let f = self.layout.buffers;
        let word = |s: &mut Self, off: u64| s.mem.u64(obj + off).unwrap_or(0);
        match t.name.as_str() {
            "bytearray" => word(self, f.bytearray_alloc).min(MAX),
            "array.array" => {
                let allocated = word(self, f.array_allocated).min(MAX);
                let descr = word(self, f.array_descr);
                let itemsize = self
                    .mem
                    .bytes(descr + f.array_descr_itemsize, 4)
                    .map(|b| u64::from(mem::u32_at(&b, 0usize)))
                    .unwrap_or(0);
                if itemsize == 0 || itemsize > 16 {
                    return 0;
                }
                allocated * itemsize
            }
            "_io.BytesIO" => {
                let buf = word(self, f.bytesio_buf);
                match self.type_of(buf) {
                    Some(bt) if bt.name == "bytes" => self.shallow_size(buf, &bt),
                    _ => 0,
                }
            }
            "mmap.mmap" => word(self, f.mmap_size).min(MAX),
            "numpy.ndarray" | "numpy.matrix" | "numpy.memmap" | "numpy.recarray" => {
                self.ndarray_data(obj).unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// The bytes of a numpy array's data when it owns them (OWNDATA), from its dimensions and
    /// its dtype's item size (numpy 2.x's where it is, else 1.x's).
    fn ndarray_data(&mut self, obj: u64) -> Option<u64> {
        const OWNDATA: u64 = 0x4;
        let f = self.layout.buffers;
        let b = self.mem.bytes(obj, f.ndarray_flags as usize + 8)?;
        let nd = u64_at(&b, f.ndarray_nd) as u32 as u64;
        let dims = u64_at(&b, f.ndarray_dims);
        let descr = u64_at(&b, f.ndarray_descr);
        let flags = u64_at(&b, f.ndarray_flags) as u32 as u64;
        if flags & OWNDATA == 0 || nd > 64 {
            return Some(0);
        }
        let span = f.descr_itemsize_v2.max(f.descr_itemsize_v1) + 8;
        let d = self.mem.bytes(descr, span as usize)?;
        let v2 = u64_at(&d, f.descr_itemsize_v2);
        let itemsize = if v2 > 0 && v2 <= 1 << 20 {
            v2
        } else {
            u64::from(mem::u32_at(&d, f.descr_itemsize_v1))
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
                strings::str_size(l, state, len)
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
