//! Code objects: their name, file and line table (cached by address), their `co_names` and
//! bytecode, and the uses a function makes of a name (the lines that load a global or an
//! attribute; whether it adds to containers at all).

use super::lines::{lnotab_line, location_line, pep626_line};
use super::Runtime;
use crate::frame::Frame;
use crate::layouts::{Layout, LineTable};
use crate::mem::{i32_at, u64_at};

#[derive(Debug, Clone)]
pub(super) struct CodeInfo {
    pub(super) name: String,
    pub(super) filename: String,
    pub(super) firstlineno: i32,
    pub(super) linetable: Vec<u8>,
    /// Where instructions start (3.11+: the code object's co_code_adaptive).
    pub(super) code_start: u64,
}

impl Runtime {
    pub(super) fn code(&mut self, addr: u64) -> Option<CodeInfo> {
        let l = self.layout;
        let span = [
            l.code_filename,
            l.code_name,
            l.code_firstlineno,
            l.code_linetable,
        ]
        .into_iter()
        .max()
        .unwrap()
            + 8;
        let b = self.read(addr, span as usize)?;
        if u64_at(&b, l.ob_type) != self.code_type {
            return None; // not a code object (stale pointer, or a non-code executable)
        }
        // Address plus immutable fields: a new code object at a recycled address is a new key.
        let key = (addr, u64_at(&b, l.code_name), u64_at(&b, l.code_filename));
        if let Some(c) = self.codes.get(&key) {
            return c.clone();
        }
        let info = (|| {
            Some(CodeInfo {
                name: self.string(u64_at(&b, l.code_name))?,
                filename: self.string(u64_at(&b, l.code_filename))?,
                firstlineno: i32_at(&b, l.code_firstlineno),
                linetable: self.bytes(u64_at(&b, l.code_linetable)).unwrap_or_default(),
                code_start: match l.code_adaptive {
                    Some(off) => addr + off,
                    None => 0,
                },
            })
        })();
        self.codes.insert(key, info.clone());
        info
    }

    /// Does a function add to containers anywhere: a store into a subscript (`d[k] = v`), or
    /// a call of a method named like one that adds (`append`, `add`, `update`...)? None: its
    /// code cannot be read. A function that does neither only reads the containers it names
    /// (`asyncio.all_tasks` iterating the task registry): it does not feed them.
    pub fn adds_to_containers(&mut self, code: u64) -> Option<bool> {
        const ADDERS: [&str; 11] = [
            "append",
            "add",
            "extend",
            "insert",
            "update",
            "setdefault",
            "appendleft",
            "extendleft",
            "put",
            "put_nowait",
            "__setitem__",
        ];
        let l = self.layout;
        for name in self.names(code)? {
            if self
                .string(name)
                .is_some_and(|s| ADDERS.contains(&s.as_str()))
            {
                return Some(true);
            }
        }
        let bytecode = self.bytecode(code)?;
        let stores = instructions(l, &bytecode).any(|(_, op, _)| l.op_store_subscr.contains(&op));
        Some(stores)
    }

    /// A code object's `co_names` (the string objects).
    fn names(&mut self, code: u64) -> Option<Vec<u64>> {
        let l = self.layout;
        let names = self.ptr(code + l.code_names);
        let n = self.ptr(names + l.var_size);
        if names == 0 || n > 4096 {
            return None;
        }
        let items = self.read(names + l.tuple_items, 8 * n as usize)?;
        Some((0..n).map(|i| u64_at(&items, 8 * i)).collect())
    }

    /// A code object's bytecode (3.11+: the adaptive copy the interpreter runs).
    fn bytecode(&mut self, code: u64) -> Option<Vec<u8>> {
        let l = self.layout;
        match (l.code_code, l.code_adaptive) {
            (Some(off), _) => self.bytes(self.ptr(code + off)),
            (None, Some(adaptive)) => {
                let units = self.ptr(code + l.var_size);
                (units <= 1 << 20)
                    .then(|| self.read(code + adaptive, 2 * units as usize))
                    .flatten()
            }
            _ => None,
        }
    }

    /// The file of a code object.
    pub fn code_file(&mut self, code: u64) -> Option<String> {
        self.code(code).map(|c| c.filename)
    }

    /// The lines of a code object that load the global `name` (LOAD_GLOBAL and its specialized
    /// forms), as frames (function, file, line).
    pub fn global_uses(&mut self, code: u64, name: &str) -> Vec<Frame> {
        let l = self.layout;
        if l.op_load_global.is_empty() {
            return Vec::new();
        }
        let ops: Vec<(u8, u8)> = l
            .op_load_global
            .iter()
            .map(|&op| (op, l.global_arg_shift))
            .collect();
        self.name_uses(code, &ops, |rt, name_obj| {
            rt.string(name_obj).as_deref() == Some(name)
        })
    }

    /// The lines of a code object that load an attribute named by the string object `key`
    /// (interned: an attribute's name in `co_names` is the same object as the key of the dicts
    /// that hold the attribute). Module code is left out: it ran at import (and
    /// its frame is the root of the main thread's every stack). A version without an opcode
    /// table gives the function without a line (the line then comes from the stacks sampled
    /// in it).
    pub fn attr_uses(&mut self, code: u64, key: u64) -> Vec<Frame> {
        let ops = self.layout.op_attr.with_shifts();
        let uses = self.name_uses(code, &ops, |_, name_obj| name_obj == key);
        uses.into_iter()
            .filter(|f| !matches!(f, Frame::Python { function, .. } if function == "<module>"))
            .collect()
    }

    /// The lines of `code` where one of `ops` (opcode, shift from its argument to its co_names
    /// index) names the co_names entry that `is_name` accepts (no ops: the function, without a
    /// line, if its co_names has it).
    fn name_uses(
        &mut self,
        code: u64,
        ops: &[(u8, u8)],
        is_name: impl Fn(&Runtime, u64) -> bool,
    ) -> Vec<Frame> {
        let l = self.layout;
        let names = self.names(code).unwrap_or_default();
        let Some(index) = (0..names.len()).find(|&i| is_name(self, names[i])) else {
            return Vec::new();
        };
        let Some(info) = self.code(code) else {
            return Vec::new();
        };
        if ops.is_empty() {
            return vec![Frame::python(&info.name, &info.filename, None)];
        }
        let mut out = Vec::new();
        let bytecode = self.bytecode(code).unwrap_or_default();
        for (i, op, arg) in instructions(l, &bytecode) {
            if !ops
                .iter()
                .any(|&(o, shift)| o == op && arg >> shift == index as u64)
            {
                continue;
            }
            let line = match l.line_table {
                LineTable::Lnotab => lnotab_line(&info.linetable, info.firstlineno, 2 * i as i32),
                LineTable::Pep626 => pep626_line(&info.linetable, info.firstlineno, 2 * i as i32),
                LineTable::Locations => location_line(&info.linetable, info.firstlineno, i),
            };
            if let Some(line) = line {
                let label = Frame::python(&info.name, &info.filename, Some(line));
                if !out.contains(&label) {
                    out.push(label);
                }
            }
        }
        out
    }
}

/// The instructions of a code object's bytecode: (index of its code unit, opcode, argument
/// with its EXTENDED_ARG prefixes), the inline cache units after each skipped.
fn instructions<'a>(
    l: &'static Layout,
    bytecode: &'a [u8],
) -> impl Iterator<Item = (usize, u8, u64)> + 'a {
    let mut i = 0;
    let mut ext = 0u64;
    std::iter::from_fn(move || loop {
        let unit = bytecode.get(2 * i..2 * i + 2)?;
        let at = i;
        let (op, arg) = (unit[0], ext << 8 | unit[1] as u64);
        let caches = l
            .op_caches
            .iter()
            .find(|c| (c.0..=c.1).contains(&op))
            .map_or(0, |c| c.2 as usize);
        i += 1 + caches;
        if op == l.op_extended_arg {
            ext = arg;
            continue;
        }
        ext = 0;
        return Some((at, op, arg));
    })
}

#[cfg(test)]
mod bytecode_tests {
    use super::*;

    #[test]
    fn cache_units_are_not_instructions() {
        let l = crate::layouts::layout_for(3, 12).unwrap();
        // LOAD_GLOBAL 1 (4 cache units, one of which reads as STORE_SUBSCR), EXTENDED_ARG 1,
        // LOAD_ATTR 2 (9 cache units), STORE_SUBSCR (1 cache unit), RETURN_CONST 0.
        let mut code = vec![116, 1, 60, 0, 60, 0, 0, 0, 0, 0];
        code.extend([144, 1, 106, 2]);
        code.extend([0; 18]);
        code.extend([60, 0, 0, 0, 121, 0]);
        let ins: Vec<(usize, u8, u64)> = instructions(l, &code).collect();
        assert_eq!(
            ins,
            vec![(0, 116, 1), (6, 106, 0x102), (16, 60, 0), (18, 121, 0)]
        );
        // 3.8-3.10 have no cache units: every unit is an instruction.
        let l = crate::layouts::layout_for(3, 9).unwrap();
        assert_eq!(instructions(l, &[60, 0, 60, 0]).count(), 2);
    }
}
