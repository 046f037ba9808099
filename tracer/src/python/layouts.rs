//! CPython struct layouts, per minor version (x86_64 release builds): the one place that knows
//! where things are inside the interpreter. Both the kernel walk (through `PyConf`) and the user
//! side (thread states, code objects, strings) read from this table.
//!
//! Extracted from the DWARF of pyenv's 3.8.18, 3.9.18, 3.10.13, 3.11.7, 3.12.1 and 3.13.0
//! (`gdb -batch -ex 'printf "%d\n", (long)&((PyThreadState*)0)->next' libpython3.X.so`), and
//! verified end to end by tests/pystacks.rs on each of them. Layouts do not change within a minor
//! version of a release build (Debian's 3.11.2 uses the 3.11 entry).
//!
//! PyASCIIObject.state (all versions here): interned bits 0-1, kind bits 2-4, compact bit 5,
//! ascii bit 6. Frame owner values (3.11-3.13): FRAME_OWNED_BY_THREAD = 0, GENERATOR = 1,
//! FRAME_OBJECT = 2; 3.12 and 3.13 add FRAME_OWNED_BY_CSTACK = 3 (shim frames, skipped).
//!
//! Offsets the same in every version here (heap census): PyGC_Head is 16 bytes before the object;
//! ob_type 8; list ob_size 16, ob_item 24; dict ma_used 16, ma_keys 32, ma_values 40; set used
//! 24; module md_dict 16, md_name 48; type tp_name 24, tp_basicsize 32, tp_flags 168, tp_dict
//! 264, tp_dictoffset 288 (gdb on the same builds).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// 3.8-3.10: PyFrameObject with f_back, f_code, f_lasti (int).
    Legacy,
    /// 3.11: _PyInterpreterFrame with prev_instr; no C-stack shim frames.
    Interp311,
    /// 3.12: prev_instr; owner 3 = C stack shim.
    Interp312,
    /// 3.13: f_executable, instr_ptr; owner 3 = C stack shim.
    Interp313,
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

#[derive(Debug, Clone, Copy)]
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
    /// <= 3.10: frame; 3.11/3.12: cframe (pointer to _PyCFrame); 3.13: current_frame
    pub tstate_frame: u64,
    /// 3.11/3.12: offsetof(_PyCFrame, current_frame)
    pub cframe_current_frame: Option<u64>,
    /// f_code (<= 3.12) or f_executable (3.13)
    pub frame_code: u64,
    /// f_back (<= 3.10) or previous (3.11+)
    pub frame_back: u64,
    /// f_lasti (int, <= 3.10), prev_instr (3.11/3.12), instr_ptr (3.13)
    pub frame_instr: u64,
    /// `owner` char of _PyInterpreterFrame (3.11+)
    pub frame_owner: Option<u64>,
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
    /// The gc's generation heads (3 x `struct gc_generation`, 24 bytes each): offset inside
    /// `_PyRuntimeState` (3.8) or `PyInterpreterState` (3.9+), for the heap census.
    pub gc_generations: u64,
    pub gc_in_runtime: bool,
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
    /// argument to its co_names index (3.11+: the low bit says "push NULL").
    pub op_load_global: &'static [u8],
    pub op_extended_arg: u8,
    pub global_arg_shift: u8,
    /// A running frame's local variables (census roots): where they start in the frame
    /// (f_localsplus, or _PyInterpreterFrame.localsplus), how many (co_nlocals, an int; 3.11+
    /// co_nlocalsplus), their names (co_varnames; 3.11+ co_localsplusnames) and kinds (3.11+
    /// co_localspluskinds: 0x40 cell, 0x80 free variable: the slot holds a cell).
    pub frame_localsplus: u64,
    pub code_nlocals: u64,
    pub code_localnames: u64,
    pub code_localkinds: Option<u64>,
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
    gc_generations: 368,
    gc_in_runtime: true,
    dict: DictLayout::Legacy,
    ht_cached_keys: None,
    code_names: 64,
    code_code: Some(48),
    func_code: 16,
    func_globals: 24,
    op_load_global: &[116],
    op_extended_arg: 144,
    global_arg_shift: 0,
    frame_localsplus: 360,
    code_nlocals: 28,
    code_localnames: 72,
    code_localkinds: None,
};

pub static LAYOUTS: &[Layout] = &[
    LEGACY,
    Layout {
        minor: 9,
        gc_generations: 640,
        gc_in_runtime: false,
        ..LEGACY
    },
    Layout {
        minor: 10,
        gc_generations: 640,
        gc_in_runtime: false,
        func_code: 48,
        func_globals: 16,
        line_table: LineTable::Pep626,
        frame_instr: 96,
        frame_localsplus: 352,
        ..LEGACY
    },
    Layout {
        minor: 11,
        frame_kind: FrameKind::Interp311,
        line_table: LineTable::Locations,
        runtime_interpreters_head: 40,
        interp_threads_head: 16,
        tstate_next: 8,
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
        unicode_state: 32,
        unicode_length: 16,
        ascii_data: 48,
        compact_data: 72,
        bytes_size: 16,
        bytes_data: 32,
        gc_generations: 672,
        gc_in_runtime: false,
        dict: DictLayout::Log2Prevalues,
        ht_cached_keys: Some(872),
        code_names: 32,
        code_code: None,
        func_code: 48,
        func_globals: 16,
        op_load_global: &[116, 47, 48, 55],
        op_extended_arg: 144,
        global_arg_shift: 1,
        frame_localsplus: 72,
        code_nlocals: 76,
        code_localnames: 96,
        code_localkinds: Some(104),
    },
    Layout {
        minor: 12,
        frame_kind: FrameKind::Interp312,
        line_table: LineTable::Locations,
        runtime_interpreters_head: 40,
        interp_threads_head: 72,
        tstate_next: 8,
        tstate_thread_id: 136,
        tstate_native_thread_id: Some(144),
        tstate_frame: 56,
        cframe_current_frame: Some(0),
        frame_code: 0,
        frame_back: 8,
        frame_instr: 56,
        frame_owner: Some(70),
        code_filename: 112,
        code_name: 120,
        code_firstlineno: 68,
        code_linetable: 136,
        code_adaptive: Some(192),
        unicode_state: 32,
        unicode_length: 16,
        ascii_data: 40,
        compact_data: 56,
        bytes_size: 16,
        bytes_data: 32,
        gc_generations: 136,
        gc_in_runtime: false,
        dict: DictLayout::Log2Tagged,
        ht_cached_keys: Some(880),
        code_names: 32,
        code_code: None,
        func_code: 48,
        func_globals: 16,
        op_load_global: &[116, 111, 112],
        op_extended_arg: 144,
        global_arg_shift: 1,
        frame_localsplus: 72,
        code_nlocals: 72,
        code_localnames: 96,
        code_localkinds: Some(104),
    },
    Layout {
        minor: 13,
        frame_kind: FrameKind::Interp313,
        line_table: LineTable::Locations,
        runtime_interpreters_head: 632,
        interp_threads_head: 7344,
        tstate_next: 8,
        tstate_thread_id: 152,
        tstate_native_thread_id: Some(160),
        tstate_frame: 72,
        cframe_current_frame: None,
        frame_code: 0,
        frame_back: 8,
        frame_instr: 56,
        frame_owner: Some(70),
        code_filename: 112,
        code_name: 120,
        code_firstlineno: 68,
        code_linetable: 136,
        code_adaptive: Some(200),
        unicode_state: 32,
        unicode_length: 16,
        ascii_data: 40,
        compact_data: 56,
        bytes_size: 16,
        bytes_data: 32,
        gc_generations: 7424,
        gc_in_runtime: false,
        dict: DictLayout::Log2Inline,
        ht_cached_keys: Some(880),
        code_names: 32,
        code_code: None,
        func_code: 48,
        func_globals: 16,
        op_load_global: &[91, 203, 204],
        op_extended_arg: 71,
        global_arg_shift: 1,
        frame_localsplus: 72,
        code_nlocals: 72,
        code_localnames: 96,
        code_localkinds: Some(104),
    },
];

pub fn layout_for(major: u8, minor: u8) -> Option<&'static Layout> {
    if major != 3 {
        return None;
    }
    LAYOUTS.iter().find(|l| l.minor == minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_per_version() {
        for minor in 8..=13 {
            assert_eq!(
                LAYOUTS.iter().filter(|l| l.minor == minor).count(),
                1,
                "3.{minor}"
            );
            assert_eq!(layout_for(3, minor).unwrap().minor, minor);
        }
        assert!(layout_for(3, 7).is_none());
        assert!(layout_for(2, 7).is_none());
    }
}
