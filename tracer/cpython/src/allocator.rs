//! Finding CPython's real allocator functions.
//!
//! `PyObject_Malloc` & co. are thin wrappers that call through an allocator table
//! (`{ctx, malloc, calloc, realloc, free}`) per domain (raw, mem, obj). The functions doing the
//! work are static: pymalloc's `_PyObject_*` and the raw domain's `_PyMem_Raw*`.
//! - With a .symtab, take them by name.
//! - On a stripped build, decode the exported wrappers' RIP-relative operands to find the tables,
//!   and read the function pointers they hold (from the live process when it runs, else from the
//!   file's static initializer).
//!
//! Builds optimised with PGO/LTO may compare the table pointer against the default function and
//! inline pymalloc's fast path into every caller ("devirtualised"): then almost no allocation passes
//! through any function entry. That is detected here (`inlined_fast_path`) and reported.
//!
//! Objects that free lists hand out again never reach the allocator: `_Py_NewReference`, called
//! for every object created, is found here too (`new_reference`) when the build calls it.

use std::collections::BTreeMap;

use crate::elf::Elf;
use crate::mem::{self, Memory};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AllocOp {
    Malloc,
    Calloc,
    Realloc,
    Free,
}

impl AllocOp {
    pub const ALL: [AllocOp; 4] = [
        AllocOp::Malloc,
        AllocOp::Calloc,
        AllocOp::Realloc,
        AllocOp::Free,
    ];
    fn suffix(self) -> &'static str {
        match self {
            AllocOp::Malloc => "Malloc",
            AllocOp::Calloc => "Calloc",
            AllocOp::Realloc => "Realloc",
            AllocOp::Free => "Free",
        }
    }
    /// Slot of the function pointer in PyMemAllocatorEx (after ctx).
    fn slot(self) -> u64 {
        8 * (1 + self as u64)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Domain {
    Raw,
    Mem,
    Obj,
}

impl Domain {
    pub const ALL: [Domain; 3] = [Domain::Raw, Domain::Mem, Domain::Obj];
    fn wrapper_prefix(self) -> &'static str {
        match self {
            Domain::Raw => "PyMem_Raw",
            Domain::Mem => "PyMem_",
            Domain::Obj => "PyObject_",
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Domain::Raw => "raw",
            Domain::Mem => "mem",
            Domain::Obj => "obj",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookSource {
    /// Functions found by name in .symtab.
    Symtab,
    /// Functions read from the allocator tables of the running process.
    LiveTable,
    /// Functions read from the allocator tables' static initializers in the file.
    StaticTable,
    /// Nothing found: allocations are not traced.
    None,
}

/// One function to probe.
#[derive(Debug, Clone)]
pub struct Hook {
    pub op: AllocOp,
    pub domains: Vec<Domain>,
    /// Symbol name when known, else `domain.op@0xaddr`.
    pub name: String,
    pub vaddr: u64,
    pub file_offset: u64,
}

#[derive(Debug, Clone)]
pub struct AllocatorHooks {
    pub hooks: Vec<Hook>,
    pub source: HookSource,
    /// The exported wrappers inline pymalloc's fast path (PGO/LTO devirtualisation).
    pub inlined_fast_path: bool,
    /// Observations worth showing in `doctor` (e.g. a replaced allocator).
    pub notes: Vec<String>,
    /// `_Py_NewReference`, to probe when the build calls it (re-attributes recycled objects).
    pub new_reference: Option<Hook>,
    /// `new_keys_object` (.symtab only), whose return re-attributes a dict's keys table taken
    /// from the keys free list.
    pub new_keys: Option<Hook>,
    /// `free_keys_object` (.symtab only), where a keys table enters the keys free list, and
    /// the index of its keys argument (1 from 3.12 on: the interpreter comes first).
    pub free_keys: Option<(Hook, u8)>,
    /// 3.8: the constructors that take objects from free lists, whose return does what the
    /// `_Py_NewReference` probe does in later versions (a header inline there).
    pub constructors: Vec<Hook>,
    /// 3.13 (`free_keys_object` inlined): `_PyDict_FromItems`, whose return re-attributes the
    /// new dict's keys table (a dict display's: `{"k": v}`).
    pub dict_from_items: Option<Hook>,
}

/// Why recycled objects keep their first stack in a build (`None`: they do not).
pub const NEW_REFERENCE_INLINED: &str =
    "recycled objects keep their first stack: _Py_NewReference is inlined in this build";

/// Resolves the allocator functions of an interpreter file. `live` = (pid, load bias) when the
/// file is mapped in a running process; `minor` is the CPython 3 minor version.
pub fn resolve(elf: &Elf, live: Option<(u32, u64)>, minor: u8) -> AllocatorHooks {
    let mut a = resolve_allocator(elf, live);
    a.new_reference = new_reference(elf, &a);
    if a.new_reference.is_none() && minor == 8 && !a.inlined_fast_path {
        // `_Py_NewReference` is a header inline: the constructors that pop free lists
        // (`new_dict` is inlined into most of its callers: the exported ones are probed too).
        a.constructors = [
            "PyList_New",
            "PyTuple_New",
            "PyFloat_FromDouble",
            "new_dict",
            "PyDict_New",
            "_PyDict_NewPresized",
        ]
        .iter()
        .filter_map(|name| code_hook(elf, name, AllocOp::Malloc))
        .collect();
    }
    if a.new_reference.is_some() || !a.constructors.is_empty() {
        a.new_keys = code_hook(elf, "new_keys_object", AllocOp::Malloc);
        a.free_keys = code_hook(elf, "free_keys_object", AllocOp::Free).and_then(|hook| {
            let arg = match minor {
                8..=11 => 0,
                12 => 1,
                _ => return None,
            };
            Some((hook, arg))
        });
        if a.free_keys.is_none() && a.new_keys.is_some() {
            let name = "_PyDict_FromItems";
            a.dict_from_items = code_hook(elf, name, AllocOp::Malloc);
        }
    }
    if a.new_reference.is_none() && a.constructors.is_empty() && a.source != HookSource::None {
        a.notes.push(NEW_REFERENCE_INLINED.into());
    }
    a
}

/// `_Py_NewReference`, when the object constructors call it: exported since 3.9 (a header
/// inline before), but inlined into its callers by builds that inline pymalloc too (LTO/PGO
/// builds such as Debian's python3.11 keep the symbol for a handful of callers only).
fn new_reference(elf: &Elf, a: &AllocatorHooks) -> Option<Hook> {
    if a.inlined_fast_path {
        return None;
    }
    code_hook(elf, "_Py_NewReference", AllocOp::Malloc)
}

/// A probe on the function `name` (exported or local) when it is code in the file.
fn code_hook(elf: &Elf, name: &str, op: AllocOp) -> Option<Hook> {
    let s = elf.dynsym(name).or_else(|| elf.local_function(name))?;
    let off = elf
        .vaddr_to_offset(s.addr)
        .filter(|_| elf.is_code(s.addr))?;
    Some(Hook {
        op,
        domains: vec![],
        name: name.into(),
        vaddr: s.addr,
        file_offset: off,
    })
}

fn resolve_allocator(elf: &Elf, live: Option<(u32, u64)>) -> AllocatorHooks {
    let decoded = decode_wrappers(elf);
    let inlined = |funcs: &[u64]| {
        decoded
            .values()
            .any(|d| d.immediates.iter().any(|i| funcs.contains(i)))
    };

    if elf.has_symtab() {
        let mut hooks = Vec::new();
        for op in AllocOp::ALL {
            for (name, domains) in [
                (
                    format!("_PyObject_{}", op.suffix()),
                    vec![Domain::Mem, Domain::Obj],
                ),
                (format!("_PyMem_Raw{}", op.suffix()), vec![Domain::Raw]),
            ] {
                if let Some(s) = elf.local_function(&name) {
                    if let Some(off) = elf.vaddr_to_offset(s.addr) {
                        hooks.push(Hook {
                            op,
                            domains,
                            name,
                            vaddr: s.addr,
                            file_offset: off,
                        });
                    }
                }
            }
        }
        if hooks.iter().any(|h| h.op == AllocOp::Malloc)
            && hooks.iter().any(|h| h.op == AllocOp::Free)
        {
            let funcs: Vec<u64> = hooks.iter().map(|h| h.vaddr).collect();
            return AllocatorHooks {
                inlined_fast_path: inlined(&funcs),
                hooks,
                source: HookSource::Symtab,
                notes: vec![],
                new_reference: None,
                new_keys: None,
                free_keys: None,
                constructors: vec![],
                dict_from_items: None,
            };
        }
    }

    // Stripped: find each domain's table from its wrappers.
    let mut notes = Vec::new();
    let mut by_addr: BTreeMap<u64, Hook> = BTreeMap::new();
    let mut source = HookSource::StaticTable;
    for domain in Domain::ALL {
        let refs: Vec<u64> = AllocOp::ALL
            .iter()
            .filter_map(|op| decoded.get(&(domain, *op)))
            .flat_map(|d| d.rip_refs.iter().copied())
            .filter(|r| elf.is_data(*r))
            .collect();
        let Some(base) = find_table(elf, &refs) else {
            notes.push(format!(
                "no allocator table found for the {} domain",
                domain.name()
            ));
            continue;
        };
        let mut funcs = [0u64; 4];
        for (i, op) in AllocOp::ALL.iter().enumerate() {
            funcs[i] = elf.static_pointer(base + op.slot()).unwrap_or(0);
        }
        if let Some((pid, bias)) = live {
            if let Some(bytes) = mem::Process(pid).bytes(base.wrapping_add(bias), 40) {
                source = HookSource::LiveTable;
                for (i, op) in AllocOp::ALL.iter().enumerate() {
                    let p = mem::u64_at(&bytes, op.slot()).wrapping_sub(bias);
                    if p != funcs[i] {
                        if elf.is_code(p) {
                            notes.push(format!(
                                "the {} domain's {} was replaced at run time (PYTHONMALLOC?)",
                                domain.name(),
                                op.suffix().to_lowercase()
                            ));
                            funcs[i] = p;
                        } else {
                            notes.push(format!(
                                "the {} domain's {} points outside the interpreter (tracemalloc or another profiler hooked it)",
                                domain.name(),
                                op.suffix().to_lowercase()
                            ));
                        }
                    }
                }
            }
        }
        for (i, op) in AllocOp::ALL.iter().enumerate() {
            let f = funcs[i];
            let Some(off) = elf.vaddr_to_offset(f).filter(|_| elf.is_code(f)) else {
                continue;
            };
            by_addr
                .entry(f)
                .and_modify(|h| h.domains.push(domain))
                .or_insert_with(|| Hook {
                    op: *op,
                    domains: vec![domain],
                    name: format!("{}.{}@{:#x}", domain.name(), op.suffix().to_lowercase(), f),
                    vaddr: f,
                    file_offset: off,
                });
        }
    }
    let hooks: Vec<Hook> = by_addr.into_values().collect();
    if hooks.is_empty() {
        notes.push("allocations cannot be traced in this build".into());
        return AllocatorHooks {
            hooks,
            source: HookSource::None,
            inlined_fast_path: false,
            notes,
            new_reference: None,
            new_keys: None,
            free_keys: None,
            constructors: vec![],
            dict_from_items: None,
        };
    }
    let funcs: Vec<u64> = hooks.iter().map(|h| h.vaddr).collect();
    AllocatorHooks {
        inlined_fast_path: inlined(&funcs),
        hooks,
        source,
        notes,
        new_reference: None,
        new_keys: None,
        free_keys: None,
        constructors: vec![],
        dict_from_items: None,
    }
}

/// The table base: a data address referenced by the wrappers such that its four function slots
/// (after ctx) all point into code.
fn find_table(elf: &Elf, refs: &[u64]) -> Option<u64> {
    let mut candidates: Vec<u64> = refs
        .iter()
        .flat_map(|r| (0..5u64).filter_map(move |k| r.checked_sub(8 * k)))
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    candidates.into_iter().find(|base| {
        AllocOp::ALL.iter().all(|op| {
            elf.static_pointer(base + op.slot())
                .is_some_and(|p| p != 0 && elf.is_code(p))
        })
    })
}

#[derive(Debug, Default, Clone)]
pub struct Decoded {
    /// Addresses of RIP-relative memory operands (mov r64,[rip+d]; jmp/call [rip+d]).
    pub rip_refs: Vec<u64>,
    /// Immediates and RIP-relative addresses compared against (cmp r64, imm32; lea r64,[rip+d]).
    pub immediates: Vec<u64>,
}

fn decode_wrappers(elf: &Elf) -> BTreeMap<(Domain, AllocOp), Decoded> {
    let mut out = BTreeMap::new();
    for domain in Domain::ALL {
        for op in AllocOp::ALL {
            let name = format!("{}{}", domain.wrapper_prefix(), op.suffix());
            let Some(sym) = elf.dynsym(&name) else {
                continue;
            };
            let len = sym.size.clamp(16, 128) as usize;
            let Some(code) = elf.read(sym.addr, len).or_else(|| elf.read(sym.addr, 16)) else {
                continue;
            };
            out.insert((domain, op), scan_x86(code, sym.addr));
        }
    }
    out
}

/// A byte-pattern scan of x86-64 code for the few instruction forms the wrappers use.
pub fn scan_x86(code: &[u8], va: u64) -> Decoded {
    let mut d = Decoded::default();
    let disp = |i: usize| -> Option<i64> {
        Some(i32::from_le_bytes(code.get(i..i + 4)?.try_into().ok()?) as i64)
    };
    let at = |i: usize, len: usize, rel: i64| (va as i64 + i as i64 + len as i64 + rel) as u64;
    let mut i = 0;
    while i < code.len() {
        let b = &code[i..];
        // REX.W (+R) mov r64, [rip+disp32]  /  lea r64, [rip+disp32]
        if b.len() >= 7
            && (b[0] == 0x48 || b[0] == 0x4c)
            && (b[1] == 0x8b || b[1] == 0x8d)
            && (b[2] & 0xc7) == 0x05
        {
            if let Some(r) = disp(i + 3) {
                let target = at(i, 7, r);
                if b[1] == 0x8b {
                    d.rip_refs.push(target)
                } else {
                    d.immediates.push(target)
                }
            }
            i += 7;
            continue;
        }
        // mov r32/r64 via 8b without REX: skip; jmp/call [rip+disp32]
        if b.len() >= 6 && b[0] == 0xff && (b[1] == 0x25 || b[1] == 0x15) {
            if let Some(r) = disp(i + 2) {
                d.rip_refs.push(at(i, 6, r));
            }
            i += 6;
            continue;
        }
        // cmp rax, imm32 (sign-extended)
        if b.len() >= 6 && b[0] == 0x48 && b[1] == 0x3d {
            if let Some(imm) = disp(i + 2) {
                d.immediates.push(imm as u64);
            }
            i += 6;
            continue;
        }
        // cmp r64, imm32: REX.W(+B) 81 /7
        if b.len() >= 7 && (b[0] == 0x48 || b[0] == 0x49) && b[1] == 0x81 && (b[2] & 0xf8) == 0xf8 {
            if let Some(imm) = disp(i + 3) {
                d.immediates.push(imm as u64);
            }
            i += 7;
            continue;
        }
        i += 1;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_style_devirtualised_wrapper() {
        // PyMem_RawMalloc of Debian's python3.11 at 0x4f7240:
        // test rdi,rdi; js ...; mov rax,[rip+0x462e18]; mov rdx,[rip+0x462e09]; cmp rax,0x4f7350; jne
        let code: Vec<u8> = vec![
            0x48, 0x85, 0xff, // 4f7240 test
            0x0f, 0x88, 0x32, 0xa2, 0xf2, 0xff, // 4f7243 js
            0x48, 0x8b, 0x05, 0x18, 0x2e, 0x46,
            0x00, // 4f7249 mov rax,[rip+0x462e18] -> 95a068
            0x48, 0x8b, 0x15, 0x09, 0x2e, 0x46,
            0x00, // 4f7250 mov rdx,[rip+0x462e09] -> 95a060
            0x48, 0x3d, 0x50, 0x73, 0x4f, 0x00, // 4f7257 cmp rax,0x4f7350
            0x75, 0x11,
        ];
        let d = scan_x86(&code, 0x4f7240);
        assert_eq!(d.rip_refs, vec![0x95a068, 0x95a060]);
        assert_eq!(d.immediates, vec![0x4f7350]);
    }

    #[test]
    fn got_style_wrapper() {
        // 3.12 shared: mov rax,[rip+0x3748c1]; mov rdi,[rax+0xb0]; jmp [rax+0xb8]
        let code = [
            0x48, 0x8b, 0x05, 0xc1, 0x48, 0x37, 0x00, 0x48, 0x8b, 0xb8, 0xb0, 0, 0, 0, 0xff, 0xa0,
            0xb8, 0, 0, 0,
        ];
        let d = scan_x86(&code, 0x1cf438);
        assert_eq!(d.rip_refs, vec![0x543d00]);
        assert!(d.immediates.is_empty());
    }

    #[test]
    fn jmp_through_table() {
        // mov rdi,[rip+0x10]; jmp [rip+0x12]
        let code = [0x48, 0x8b, 0x3d, 0x10, 0, 0, 0, 0xff, 0x25, 0x12, 0, 0, 0];
        let d = scan_x86(&code, 0x1000);
        assert_eq!(d.rip_refs, vec![0x1000 + 7 + 0x10, 0x1000 + 13 + 0x12]);
    }
}
