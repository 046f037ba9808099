//! The references an object's body holds, as the back-reference search follows them (a dict's
//! values, items, entries, attributes, and the pointer-like words of a C object), and the check
//! that one still holds another.

use super::objects::Reader;
use super::types::{Kind, TypeInfo, INLINE_VALUES, MANAGED_DICT};
use crate::layouts::DictLayout;
use crate::mem::{u64_at, Memory};

/// Items of a list, tuple or set read at most by the back-reference search.
const MAX_ITEMS: u64 = 1 << 24;
/// Bytes of a C object's body read at most by the back-reference search.
const MAX_BODY: u64 = 4096;

/// How a holder refers to what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    /// A dict's value under this key object.
    Key(u64),
    /// An attribute (of an instance, or of a class), named by this key object.
    Attr(u64),
    /// An instance's `__dict__` pointer, at this offset from the object (negative: a managed
    /// dict, before it).
    Dict(i64),
    /// A list's or tuple's item at this index.
    Item(u64),
    /// A set's entry.
    Member,
    /// A C-level field (or a slot) at this offset.
    Field(u64),
}

impl Reader<'_> {
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
                    let entry = l.set_entry_size as usize;
                    if let Some(b) = self.mem.bytes(table, entry * (mask as usize + 1)) {
                        out.extend(
                            (0..=mask as usize)
                                .map(|i| u64_at(&b, entry * i))
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
                    for off in (l.object_header..size).step_by(8) {
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
