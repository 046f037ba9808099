//! CPython struct layouts and version capabilities (x86_64 release builds): the one place that
//! knows where things are inside the interpreter and how versions differ. The kernel walk
//! (through `PyConf`), the user side (thread states, code objects, strings) and the heap census
//! all read from a `Layout`. This file holds what a layout is and how a process's is resolved;
//! `tables` the entries per version, each written as what differs from the previous one.
//!
//! 3.8-3.12: extracted from the DWARF of pyenv's 3.8.18, 3.9.18, 3.10.13, 3.11.7, 3.12.1
//! (`gdb -batch -ex 'printf "%d\n", (long)&((PyThreadState*)0)->next' libpython3.X.so`), and
//! verified end to end by tests/pystacks.rs and tests/census.rs on each of them. Layouts do not
//! change within a minor version of those (Debian's 3.11.2 uses the 3.11 entry).
//!
//! 3.13+: patch releases move fields (3.13.0 vs Debian's 3.13.5: the gc's lists), so the layout
//! is built from the target's own `_Py_DebugOffsets` (see debug_offsets.rs) on top of this
//! table's entry, which keeps only what the debug table does not give: gc list heads (searched
//! and validated live when the debug table is used), dict keys internals, co_names,
//! func_code/func_globals, the opcodes that load a global, frame owner values, stack reference
//! tag bits. The 3.13-3.15 entries come from pyenv 3.13.0 and Debian's 3.13.5, 3.14.10, 3.15.2
//! (`opcode.opmap` in each, and their debug tables).
//!
//! PyASCIIObject.state (all versions here): interned bits 0-1, kind bits 2-4, compact bit 5,
//! ascii bit 6. Frame owner values: FRAME_OWNED_BY_THREAD = 0, GENERATOR = 1, FRAME_OBJECT = 2;
//! 3.12/3.13: 3 = C stack shim; 3.14: 3 = interpreter entry frame, 4 = C stack; 3.15: 3 =
//! interpreter (C stack owner removed). Values from `owner_not_python` on are not Python code.
//!
//! Offsets the same in every version here unless a debug table says otherwise (heap census):
//! PyGC_Head is 16 bytes before the object; ob_type 8; list ob_size 16, ob_item 24; dict ma_used
//! 16, ma_keys 32, ma_values 40; set used 24, mask 32, table 40; tuple ob_item 24 (32 from 3.14); module md_dict 16,
//! md_name 48 (40 in 3.15); type tp_name 24, tp_basicsize 32, tp_flags 168, tp_dict 264,
//! tp_dictoffset 288 (gdb on the same builds; 3.14/3.15 by reading live objects). The other
//! object fields the census reads (ob_type, ob_size, the gc header, the managed dict slots before
//! an object, PyDictKeysObject and its entries) are named fields of `Layout` too, each with the
//! CPython field it is.

mod opcaches;
mod tables;

use std::sync::Mutex;

use crate::debug_offsets::DebugOffsets;
pub use tables::LAYOUTS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// 3.8-3.10: PyFrameObject with f_back, f_code, f_lasti (int).
    Legacy,
    /// 3.11+: _PyInterpreterFrame with previous, a code pointer and an instruction pointer.
    Interp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineTable {
    /// 3.8-3.9: co_lnotab, byte offsets.
    Lnotab,
    /// 3.10: co_linetable (PEP 626).
    Pep626,
    /// 3.11+: co_linetable location table.
    Locations,
}

/// The opcodes that load an attribute (made from each build's own `opcode` tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttrOps {
    /// LOAD_ATTR (<= 3.11), LOAD_METHOD (<= 3.11) and their specialized forms: the argument
    /// is the co_names index. Only loads: the code that grows a container loads the attribute
    /// that holds it (`self.loggerDict[name] = rv`); STORE_ATTR replaces it (`self.loggerDict =
    /// {}` in `Manager.__init__`).
    pub plain: &'static [u8],
    /// 3.12+ LOAD_ATTR and its specialized forms: the argument's low bit says "method", the
    /// rest is the index.
    pub load: &'static [u8],
}

impl AttrOps {
    /// (opcode, shift from its argument to its co_names index).
    pub fn with_shifts(&self) -> Vec<(u8, u8)> {
        let plain = self.plain.iter().map(|&op| (op, 0));
        plain.chain(self.load.iter().map(|&op| (op, 1))).collect()
    }
}

/// Where a generator object keeps its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenFrame {
    /// 3.8-3.10: a pointer to its frame object (`gi_frame`, NULL once finished).
    Pointer(u64),
    /// 3.11+: the interpreter frame inline (`gi_iframe`) and its state (`gi_frame_state`, a
    /// byte), from which state on the frame is finished or cleared (3.11-3.14: 1, completed;
    /// 3.15: 5).
    Inline {
        frame: u64,
        state: u64,
        dead_from: i8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub minor: u8,
    pub frame_kind: FrameKind,
    pub line_table: LineTable,
    /// offsetof(_PyRuntimeState, interpreters.head)
    pub runtime_interpreters_head: u64,
    /// PyInterpreterState: tstate_head (<= 3.10) or threads.head (3.11+)
    pub interp_threads_head: u64,
    pub tstate_next: u64,
    /// unsigned long thread_id (pthread_self)
    pub tstate_thread_id: u64,
    /// 3.11+ only
    pub tstate_native_thread_id: Option<u64>,
    /// <= 3.10: frame; 3.11/3.12: cframe (pointer to _PyCFrame); 3.13+: current_frame
    pub tstate_frame: u64,
    /// 3.11/3.12: offsetof(_PyCFrame, current_frame); None: the thread state points at the
    /// frame itself.
    pub cframe_current_frame: Option<u64>,
    /// f_code (<= 3.12) or f_executable (3.13+)
    pub frame_code: u64,
    /// f_back (<= 3.10) or previous (3.11+)
    pub frame_back: u64,
    /// f_lasti (int, <= 3.10), prev_instr (3.11/3.12), instr_ptr (3.13+)
    pub frame_instr: u64,
    /// `owner` char of _PyInterpreterFrame (3.11+)
    pub frame_owner: Option<u64>,
    /// Frames whose owner is this value or more are not Python code (3.12+: C stack shims,
    /// 3.14+: interpreter entry frames): skipped. None: every frame is Python code (3.11's owner
    /// values mean something else).
    pub owner_not_python: Option<u8>,
    /// Low bits of the frame's code reference that tag it (3.14+: f_executable is a
    /// _PyStackRef), cleared before use.
    pub code_tag_bits: u64,
    /// The instruction pointer of a calling frame already points past the call (3.13+).
    pub instr_after_call: bool,
    pub code_filename: u64,
    pub code_name: u64,
    pub code_firstlineno: u64,
    /// co_lnotab (3.8/3.9) or co_linetable (3.10+)
    pub code_linetable: u64,
    /// 3.11+: offsetof(PyCodeObject, co_code_adaptive)
    pub code_adaptive: Option<u64>,
    pub unicode_state: u64,
    pub unicode_length: u64,
    /// sizeof(PyASCIIObject): compact ASCII data follows
    pub ascii_data: u64,
    /// sizeof(PyCompactUnicodeObject): compact non-ASCII data follows
    pub compact_data: u64,
    pub bytes_size: u64,
    pub bytes_data: u64,
    /// Where the gc's list heads are (heap census).
    pub gc: GcHeads,
    pub dict: DictLayout,
    /// offsetof(PyHeapTypeObject, ht_cached_keys) (3.11+: attribute names of inline values)
    pub ht_cached_keys: Option<u64>,
    /// Where code uses a global (census: the lines that name a growing container):
    /// PyCodeObject co_names, co_code (a bytes object, <= 3.10; 3.11+ code is inline at
    /// `code_adaptive`, ob_size code units), PyFunctionObject func_code and func_globals.
    pub code_names: u64,
    pub code_code: Option<u64>,
    pub func_code: u64,
    pub func_globals: u64,
    /// LOAD_GLOBAL and its specialized forms, EXTENDED_ARG, and the shift from LOAD_GLOBAL's
    /// argument to its co_names index (3.11+: the low bit says "push NULL"). Empty for a
    /// version tracer has no opcode table for (the lines that use a global are not found).
    pub op_load_global: &'static [u8],
    pub op_extended_arg: u8,
    pub global_arg_shift: u8,
    /// The opcodes that name an attribute (see `AttrOps`). Empty: the functions that name an
    /// attribute are found without their lines.
    pub op_attr: AttrOps,
    /// STORE_SUBSCR and its specialized forms (a function that stores into a container:
    /// `cache[key] = value`).
    pub op_store_subscr: &'static [u8],
    /// 3.11+: the inline cache units that follow an instruction, by opcode (first, last,
    /// units), specialized forms included: a walk of the bytecode skips them (their bytes are
    /// counters and versions, not instructions).
    pub op_caches: &'static [(u8, u8, u8)],
    /// A running frame's local variables (census roots): where they start in the frame
    /// (f_localsplus, or _PyInterpreterFrame.localsplus), how many (co_nlocals, an int; 3.11+
    /// co_nlocalsplus), their names (co_varnames; 3.11+ co_localsplusnames) and kinds (3.11+
    /// co_localspluskinds: 0x40 cell, 0x80 free variable: the slot holds a cell).
    pub frame_localsplus: u64,
    /// Where a generator's or coroutine's frame is (a suspended one's locals are census roots).
    pub gen_frame: GenFrame,
    pub code_nlocals: u64,
    pub code_localnames: u64,
    pub code_localkinds: Option<u64>,
    /// Object fields the census reads: type tp_name, tp_basicsize, tp_flags, tp_dict,
    /// tp_dictoffset; list ob_size and ob_item; dict ma_keys and ma_values; set used.
    pub tp_name: u64,
    pub tp_basicsize: u64,
    pub tp_flags: u64,
    pub tp_dict: u64,
    pub tp_dictoffset: u64,
    pub list_size: u64,
    pub list_items: u64,
    pub dict_keys: u64,
    pub dict_values: u64,
    pub set_used: u64,
    /// PySetObject.mask (slots - 1) and table (entries of key, hash): the census's
    /// back-reference search reads a set's items.
    pub set_mask: u64,
    pub set_table: u64,
    pub tuple_items: u64,
    /// PyModuleObject md_dict and md_name.
    pub module_dict: u64,
    pub module_name: u64,
    /// PyObject.ob_type.
    pub ob_type: u64,
    /// PyVarObject.ob_size: a tuple's length, an int's digit count, a bytes' length; a 3.11+
    /// code object's count of code units.
    pub var_size: u64,
    /// PyCellObject.ob_ref (a cell or free variable's object).
    pub cell_ref: u64,
    /// sizeof(PyGC_Head): the gc's links (next, prev) sit this many bytes before the object.
    pub gc_head_size: u64,
    /// sizeof(struct gc_generation) (a list head, threshold, count), for `GcHeads::Fixed`.
    pub gc_generation_size: u64,
    /// PyDictObject.ma_used (the number of items).
    pub dict_used: u64,
    /// PyListObject.allocated (slots of the item array).
    pub list_allocated: u64,
    /// 3.11+ managed dicts (`Py_TPFLAGS_MANAGED_DICT`): the dict pointer sits this many bytes
    /// before the object (3.12: a tagged word, the values' address - 1 when they are inline).
    pub managed_dict_before: u64,
    /// 3.11: the PyDictValues pointer of an object without a dict, this many bytes before it.
    pub managed_values_before: u64,
    /// PyDictValues: bytes before the first value (3.13+: capacity, size, embedded, valid).
    pub values_header: u64,
    /// 3.13+ PyDictValues.valid (a byte: the inline values are in use, not a dict).
    pub values_valid: u64,
    /// PyDictKeysObject.
    pub dict_keys_object: DictKeys,
    /// sizeof(PyObject) (reference count, type): an object's own fields start after it.
    pub object_header: u64,
    /// sizeof(setentry) (key, hash): a set's table entries, the key first.
    pub set_entry_size: u64,
    /// co_localspluskinds bits of a slot that holds a cell (CO_FAST_CELL | CO_FAST_FREE, 3.11+).
    pub local_cell_kinds: u8,
    /// Where objects keep the buffers they own (what an item of a container costs).
    pub buffers: Buffers,
}

/// Fields of the objects that own a buffer outside their body (the same in every version here):
/// CPython's bytearray, array.array, io.BytesIO and mmap.mmap, and numpy's arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffers {
    /// PyByteArrayObject.ob_alloc (bytes allocated).
    pub bytearray_alloc: u64,
    /// arrayobject.allocated (items allocated) and ob_descr (its arraydescr), and
    /// arraydescr.itemsize (an int).
    pub array_allocated: u64,
    pub array_descr: u64,
    pub array_descr_itemsize: u64,
    /// bytesio.buf (its bytes object).
    pub bytesio_buf: u64,
    /// mmap_object.size (bytes mapped).
    pub mmap_size: u64,
    /// numpy's PyArrayObject: nd (an int), dimensions (npy_intp array), descr, flags (an int);
    /// its descr's item size (numpy 2.x: an npy_intp; 1.x: an int elsewhere).
    pub ndarray_nd: u64,
    pub ndarray_dims: u64,
    pub ndarray_descr: u64,
    pub ndarray_flags: u64,
    pub descr_itemsize_v2: u64,
    pub descr_itemsize_v1: u64,
}

/// Fields of a PyDictKeysObject (the keys table of a dict).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DictKeys {
    /// dk_refcnt (a u64: 1 for a dict's own table, more for shared keys).
    pub refcnt: u64,
    /// 3.8-3.10: dk_size (a u64, slots of the index table). 3.11+: dk_log2_size (a byte).
    pub size: u64,
    /// 3.11+ dk_log2_index_bytes (a byte: the index table is 1 << it bytes).
    pub log2_index_bytes: u64,
    /// 3.11+ dk_kind (a byte: 0 = general, hash/key/value entries; else key/value entries).
    pub kind: u64,
    /// dk_nentries (a u64: entries used, deleted included).
    pub nentries: u64,
    /// Bytes before the index table (dk_indices), the entries following it.
    pub indices: u64,
    /// PyDictKeyEntry (hash, key, value) and, 3.11+, PyDictUnicodeEntry (key, value) of
    /// str-keyed and split tables (dk_kind != 0).
    pub general_entry: DictEntry,
    pub unicode_entry: DictEntry,
}

/// One entry of a dict's keys table: its size and where its key and value pointers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DictEntry {
    pub size: u64,
    pub key: u64,
    pub value: u64,
}

/// Where the gc keeps its lists of tracked objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcHeads {
    /// 3 x `struct gc_generation` (24 bytes each) at this offset inside `_PyRuntimeState`
    /// (`in_runtime`, 3.8) or `PyInterpreterState` (3.9+).
    Fixed { offset: u64, in_runtime: bool },
    /// Somewhere inside the interpreter's gc state (`offset`, `size` bytes): the heads are
    /// found by checking candidate positions live. Patch releases of 3.13-3.15 differ here
    /// (generational vs incremental gc, and Debian's 3.13.5 packs the heads at 4-byte offsets).
    Search { offset: u64, size: u64 },
}

/// How dicts and instance attributes are laid out (heap census, naming by reachability).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DictLayout {
    /// 3.8-3.10: dk_size, 24-byte entries; instance dicts at tp_dictoffset.
    Legacy,
    /// 3.11: dk_log2_size/dk_log2_index_bytes/dk_kind, 16-byte unicode entries; managed dict
    /// pointer at obj-24, inline values pointer at obj-32.
    Log2Prevalues,
    /// 3.12: as 3.11, with one tagged word at obj-24 (the dict, or the values' address - 1).
    Log2Tagged,
    /// 3.13: managed dict at obj-24, inline values after the object (tp_basicsize) with a
    /// 4-byte header (capacity, size, embedded, valid).
    Log2Inline,
}

/// The table's entry for a minor version.
pub fn layout_for(major: u8, minor: u8) -> Option<&'static Layout> {
    if major != 3 {
        return None;
    }
    LAYOUTS.iter().find(|l| l.minor == minor)
}

/// Where a process's layout comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutSource {
    /// The target's own `_Py_DebugOffsets`, on top of tracer's entry for that minor (or the
    /// newest one, for a newer minor).
    DebugOffsets { base_minor: u8 },
    /// tracer's table only.
    Table,
    /// No layout: why (an unknown version, a debug table that fails validation, a
    /// free-threaded build...).
    None(String),
}

impl LayoutSource {
    pub fn describe(&self, minor: u8) -> String {
        match self {
            LayoutSource::DebugOffsets { base_minor } if *base_minor == minor => {
                "debug offsets in the target (_Py_DebugOffsets, validated)".into()
            }
            LayoutSource::DebugOffsets { base_minor } => format!(
                "debug offsets in the target (_Py_DebugOffsets, validated; the rest from \
                 tracer's table for 3.{base_minor})"
            ),
            LayoutSource::Table => format!("tracer's table for 3.{minor}"),
            LayoutSource::None(why) => format!("none ({why})"),
        }
    }
}

/// The layout of an interpreter of version 3.`minor`, from its debug table when it has one.
pub fn resolve(minor: u8, debug: Option<&DebugOffsets>) -> Option<&'static Layout> {
    let Some(d) = debug else {
        return (minor < 13).then(|| layout_for(3, minor)).flatten();
    };
    let newest = LAYOUTS.last().unwrap();
    let base = match layout_for(3, minor) {
        Some(l) => *l,
        None if minor > newest.minor => Layout {
            minor,
            // No opcode table for a version newer than tracer: no lines for a global's uses
            // (an attribute's uses are found by function).
            op_load_global: &[],
            op_attr: AttrOps {
                plain: &[],
                load: &[],
            },
            ..*newest
        },
        None => return None,
    };
    Some(intern(from_debug(base, d)))
}

/// `base` with every offset the debug table gives.
fn from_debug(base: Layout, d: &DebugOffsets) -> Layout {
    let or = |name: &str, dflt: u64| d.get(name).unwrap_or(dflt);
    Layout {
        runtime_interpreters_head: d.at("runtime_state.interpreters_head"),
        interp_threads_head: d.at("interpreter_state.threads_head"),
        tstate_next: d.at("thread_state.next"),
        tstate_thread_id: d.at("thread_state.thread_id"),
        tstate_native_thread_id: Some(d.at("thread_state.native_thread_id")),
        tstate_frame: d.at("thread_state.current_frame"),
        cframe_current_frame: None,
        frame_code: d.at("interpreter_frame.executable"),
        frame_back: d.at("interpreter_frame.previous"),
        frame_instr: d.at("interpreter_frame.instr_ptr"),
        frame_owner: Some(d.at("interpreter_frame.owner")),
        frame_localsplus: d.at("interpreter_frame.localsplus"),
        gen_frame: match (
            base.gen_frame,
            d.get("gen_object.gi_iframe"),
            d.get("gen_object.gi_frame_state"),
        ) {
            (GenFrame::Inline { dead_from, .. }, Some(frame), Some(state)) => GenFrame::Inline {
                frame,
                state,
                dead_from,
            },
            (g, _, _) => g,
        },
        code_filename: d.at("code_object.filename"),
        code_name: d.at("code_object.name"),
        code_firstlineno: d.at("code_object.firstlineno"),
        code_linetable: d.at("code_object.linetable"),
        code_adaptive: Some(d.at("code_object.co_code_adaptive")),
        code_localnames: d.at("code_object.localsplusnames"),
        code_localkinds: Some(d.at("code_object.localspluskinds")),
        unicode_state: d.at("unicode_object.state"),
        unicode_length: d.at("unicode_object.length"),
        ascii_data: d.at("unicode_object.asciiobject_size"),
        compact_data: or(
            "unicode_object.compactunicodeobject_size",
            base.compact_data,
        ),
        bytes_size: d.at("bytes_object.ob_size"),
        bytes_data: d.at("bytes_object.ob_sval"),
        gc: GcHeads::Search {
            offset: d.at("interpreter_state.gc"),
            size: d.at("gc.size"),
        },
        ht_cached_keys: Some(or(
            "heap_type_object.ht_cached_keys",
            base.ht_cached_keys.unwrap_or(0),
        )),
        tp_name: d.at("type_object.tp_name"),
        tp_flags: d.at("type_object.tp_flags"),
        tp_basicsize: or("type_object.tp_basicsize", base.tp_basicsize),
        tp_dictoffset: or("type_object.tp_dictoffset", base.tp_dictoffset),
        list_size: d.at("list_object.ob_size"),
        list_items: d.at("list_object.ob_item"),
        dict_keys: d.at("dict_object.ma_keys"),
        dict_values: d.at("dict_object.ma_values"),
        set_used: or("set_object.used", base.set_used),
        set_mask: or("set_object.mask", base.set_mask),
        set_table: or("set_object.table", base.set_table),
        tuple_items: d.at("tuple_object.ob_item"),
        ob_type: d.at("pyobject.ob_type"),
        ..base
    }
}

/// Layouts built at run time live as long as the tracer: one copy of each distinct one.
fn intern(l: Layout) -> &'static Layout {
    static BUILT: Mutex<Vec<&'static Layout>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = built.iter().find(|b| ***b == l) {
        return b;
    }
    let b: &'static Layout = Box::leak(Box::new(l));
    built.push(b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_version() {
        for minor in 8..=15 {
            assert_eq!(
                LAYOUTS.iter().filter(|l| l.minor == minor).count(),
                1,
                "3.{minor}"
            );
            assert_eq!(layout_for(3, minor).unwrap().minor, minor);
        }
        assert!(layout_for(3, 7).is_none());
        assert!(layout_for(2, 7).is_none());
        // 3.13+ are read through their debug table only.
        assert!(resolve(13, None).is_none());
        assert_eq!(resolve(12, None).unwrap().minor, 12);
    }

    #[test]
    fn capabilities() {
        let l = |m| layout_for(3, m).unwrap();
        assert_eq!(l(11).owner_not_python, None);
        assert_eq!(l(12).owner_not_python, Some(3));
        assert_eq!(l(14).owner_not_python, Some(3));
        assert_eq!(l(13).code_tag_bits, 0);
        assert_eq!(l(14).code_tag_bits, 3);
        assert!(!l(12).instr_after_call && l(13).instr_after_call);
        assert_eq!(l(12).cframe_current_frame, Some(0));
        assert_eq!(l(13).cframe_current_frame, None);
    }
}
