//! tracer's table of CPython layouts, one entry per minor version (x86_64 release builds), each
//! written as what differs from the previous one (where they come from: see the parent module).

use super::opcaches;
use super::{
    AttrOps, Buffers, DictEntry, DictKeys, DictLayout, FrameKind, GcHeads, GenFrame, Layout,
    LineTable,
};

const GENERAL_ENTRY: DictEntry = DictEntry {
    size: 24,
    key: 8,
    value: 16,
};

/// 3.8-3.10 PyDictKeysObject: refcnt, size, lookup function, usable, nentries, indices.
const LEGACY_DICT_KEYS: DictKeys = DictKeys {
    refcnt: 0,
    size: 8,
    log2_index_bytes: 0,
    kind: 0,
    nentries: 32,
    indices: 40,
    general_entry: GENERAL_ENTRY,
    unicode_entry: GENERAL_ENTRY,
};

/// 3.11+ PyDictKeysObject: refcnt, log2_size, log2_index_bytes, kind (bytes), version,
/// usable, nentries, indices.
const LOG2_DICT_KEYS: DictKeys = DictKeys {
    refcnt: 0,
    size: 8,
    log2_index_bytes: 9,
    kind: 10,
    nentries: 24,
    indices: 32,
    general_entry: GENERAL_ENTRY,
    unicode_entry: DictEntry {
        size: 16,
        key: 0,
        value: 8,
    },
};

/// Owned buffers (gdb on pyenv's builds; numpy 1.26 and 2.x).
const BUFFERS: Buffers = Buffers {
    bytearray_alloc: 24,
    array_allocated: 32,
    array_descr: 40,
    array_descr_itemsize: 4,
    bytesio_buf: 16,
    mmap_size: 24,
    ndarray_nd: 24,
    ndarray_dims: 32,
    ndarray_descr: 56,
    ndarray_flags: 64,
    descr_itemsize_v2: 40,
    descr_itemsize_v1: 32,
};

const LEGACY: Layout = Layout {
    minor: 8,
    frame_kind: FrameKind::Legacy,
    line_table: LineTable::Lnotab,
    runtime_interpreters_head: 32,
    interp_threads_head: 8,
    tstate_next: 8,
    tstate_thread_id: 176,
    tstate_native_thread_id: None,
    tstate_frame: 24,
    cframe_current_frame: None,
    frame_code: 32,
    frame_back: 24,
    frame_instr: 104,
    frame_owner: None,
    owner_not_python: None,
    code_tag_bits: 0,
    instr_after_call: false,
    code_filename: 104,
    code_name: 112,
    code_firstlineno: 40,
    code_linetable: 120,
    code_adaptive: None,
    unicode_state: 32,
    unicode_length: 16,
    ascii_data: 48,
    compact_data: 72,
    bytes_size: 16,
    bytes_data: 32,
    gc: GcHeads::Fixed {
        offset: 368,
        in_runtime: true,
    },
    dict: DictLayout::Legacy,
    ht_cached_keys: None,
    code_names: 64,
    code_code: Some(48),
    func_code: 16,
    func_globals: 24,
    op_load_global: &[116],
    op_extended_arg: 144,
    global_arg_shift: 0,
    op_attr: AttrOps {
        plain: &[106, 160],
        load: &[],
    },
    op_store_subscr: &[60],
    op_caches: &[],
    frame_localsplus: 360,
    gen_frame: GenFrame::Pointer(16),
    code_nlocals: 28,
    code_localnames: 72,
    code_localkinds: None,
    tp_name: 24,
    tp_basicsize: 32,
    tp_flags: 168,
    tp_dict: 264,
    tp_dictoffset: 288,
    list_size: 16,
    list_items: 24,
    dict_keys: 32,
    dict_values: 40,
    set_used: 24,
    set_mask: 32,
    set_table: 40,
    tuple_items: 24,
    module_dict: 16,
    module_name: 48,
    ob_type: 8,
    var_size: 16,
    cell_ref: 16,
    gc_head_size: 16,
    gc_generation_size: 24,
    dict_used: 16,
    list_allocated: 32,
    managed_dict_before: 24,
    managed_values_before: 32,
    values_header: 0,
    values_valid: 3,
    dict_keys_object: LEGACY_DICT_KEYS,
    object_header: 16,
    set_entry_size: 16,
    local_cell_kinds: 0xc0,
    buffers: BUFFERS,
};

const V39: Layout = Layout {
    minor: 9,
    gc: GcHeads::Fixed {
        offset: 640,
        in_runtime: false,
    },
    ..LEGACY
};

const V310: Layout = Layout {
    minor: 10,
    func_code: 48,
    func_globals: 16,
    line_table: LineTable::Pep626,
    frame_instr: 96,
    frame_localsplus: 352,
    ..V39
};

const V311: Layout = Layout {
    minor: 11,
    frame_kind: FrameKind::Interp,
    line_table: LineTable::Locations,
    runtime_interpreters_head: 40,
    interp_threads_head: 16,
    tstate_thread_id: 152,
    tstate_native_thread_id: Some(160),
    tstate_frame: 56,
    cframe_current_frame: Some(8),
    frame_code: 32,
    frame_back: 48,
    frame_instr: 56,
    frame_owner: Some(69),
    code_filename: 112,
    code_name: 120,
    code_firstlineno: 72,
    code_linetable: 136,
    code_adaptive: Some(184),
    gc: GcHeads::Fixed {
        offset: 672,
        in_runtime: false,
    },
    dict: DictLayout::Log2Prevalues,
    dict_keys_object: LOG2_DICT_KEYS,
    ht_cached_keys: Some(872),
    code_names: 32,
    code_code: None,
    op_load_global: &[116, 47, 48, 55],
    global_arg_shift: 1,
    op_attr: AttrOps {
        plain: &[106, 39, 40, 41, 42, 43, 160, 56, 57, 58, 59, 62, 63],
        load: &[],
    },
    op_store_subscr: &[60, 168, 169, 170],
    op_caches: opcaches::CACHES_311,
    frame_localsplus: 72,
    gen_frame: GenFrame::Inline {
        frame: 80,
        state: 75,
        dead_from: 1,
    },
    code_nlocals: 76,
    code_localnames: 96,
    code_localkinds: Some(104),
    ..V310
};

const V312: Layout = Layout {
    minor: 12,
    interp_threads_head: 72,
    tstate_thread_id: 136,
    tstate_native_thread_id: Some(144),
    cframe_current_frame: Some(0),
    frame_code: 0,
    frame_back: 8,
    frame_owner: Some(70),
    owner_not_python: Some(3),
    code_firstlineno: 68,
    code_adaptive: Some(192),
    ascii_data: 40,
    compact_data: 56,
    gc: GcHeads::Fixed {
        offset: 136,
        in_runtime: false,
    },
    dict: DictLayout::Log2Tagged,
    ht_cached_keys: Some(880),
    op_load_global: &[116, 111, 112],
    op_attr: AttrOps {
        plain: &[],
        load: &[106, 70, 72, 73, 76, 77, 78, 79, 80, 81, 82],
    },
    op_store_subscr: &[60, 159, 160],
    op_caches: opcaches::CACHES_312,
    code_nlocals: 72,
    gen_frame: GenFrame::Inline {
        frame: 72,
        state: 67,
        dead_from: 1,
    },
    ..V311
};

/// pyenv's 3.13.0 (a 3.13 debug table replaces the struct offsets).
const V313: Layout = Layout {
    minor: 13,
    runtime_interpreters_head: 632,
    interp_threads_head: 7344,
    tstate_thread_id: 152,
    tstate_native_thread_id: Some(160),
    tstate_frame: 72,
    cframe_current_frame: None,
    instr_after_call: true,
    code_adaptive: Some(200),
    gc: GcHeads::Fixed {
        offset: 7424,
        in_runtime: false,
    },
    dict: DictLayout::Log2Inline,
    values_header: 8,
    op_load_global: &[91, 203, 204],
    op_extended_arg: 71,
    op_attr: AttrOps {
        plain: &[],
        load: &[
            82, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202,
        ],
    },
    op_store_subscr: &[39, 212, 213],
    op_caches: opcaches::CACHES_313,
    ..V312
};

/// Debian's 3.14.10: f_executable is a tagged _PyStackRef; owner 3 = interpreter entry frame;
/// tuples cache their hash (items at 32).
const V314: Layout = Layout {
    minor: 14,
    tuple_items: 32,
    runtime_interpreters_head: 808,
    interp_threads_head: 7344,
    frame_localsplus: 80,
    code_tag_bits: 3,
    code_adaptive: Some(208),
    gc: GcHeads::Search {
        offset: 7408,
        size: 264,
    },
    op_load_global: &[92, 192, 193],
    op_extended_arg: 69,
    op_attr: AttrOps {
        plain: &[],
        load: &[
            80, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189,
        ],
    },
    op_store_subscr: &[38, 201, 202],
    op_caches: opcaches::CACHES_314,
    ..V313
};

/// Debian's 3.15.2: PyModuleObject lost a field before md_name.
const V315: Layout = Layout {
    minor: 15,
    runtime_interpreters_head: 936,
    interp_threads_head: 7336,
    tstate_thread_id: 176,
    tstate_native_thread_id: Some(184),
    module_name: 40,
    gc: GcHeads::Search {
        offset: 7400,
        size: 176,
    },
    op_load_global: &[91, 196, 197],
    op_extended_arg: 67,
    // Frame states are not negative any more: 0 created ... 4 executing, 5 cleared.
    gen_frame: GenFrame::Inline {
        frame: 72,
        state: 67,
        dead_from: 5,
    },
    op_attr: AttrOps {
        plain: &[],
        load: &[
            79, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195,
        ],
    },
    op_store_subscr: &[36, 208, 209],
    op_caches: opcaches::CACHES_315,
    ..V314
};

pub static LAYOUTS: &[Layout] = &[LEGACY, V39, V310, V311, V312, V313, V314, V315];
