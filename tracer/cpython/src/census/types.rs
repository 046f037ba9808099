//! Type objects as the census reads them: a type is trusted only if it is one (its own type is
//! `type` or a metaclass, its name printable, its size sane: a word that is not an object, an
//! int's value say, is never read as a container), then read once per pass.

use std::collections::HashMap;

use crate::layouts::Layout;
use crate::mem::{u64_at, Memory};

// Type flags (the same in every version here).
pub(super) const INLINE_VALUES: u64 = 1 << 2;
pub(super) const MANAGED_DICT: u64 = 1 << 4;
/// Py_TPFLAGS_HEAPTYPE: a class made by Python code (or a C extension's heap type).
const HEAPTYPE: u64 = 1 << 9;
/// Py_TPFLAGS_HAVE_GC: its objects carry the gc's header before them.
pub(super) const HAVE_GC: u64 = 1 << 14;
const LIST_SUBCLASS: u64 = 1 << 25;
const DICT_SUBCLASS: u64 = 1 << 29;
const TUPLE_SUBCLASS: u64 = 1 << 26;
const TYPE_SUBCLASS: u64 = 1 << 31;

#[derive(Debug, Clone)]
pub(super) struct TypeInfo {
    pub(super) name: String,
    pub(super) flags: u64,
    pub(super) basicsize: u64,
    pub(super) dictoffset: i64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layouts::layout_for;
    use crate::mem::recorded::{PageMap, Replay};
    use crate::mem::PAGE;

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
