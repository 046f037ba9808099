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
};

pub static LAYOUTS: &[Layout] = &[
    LEGACY,
    Layout { minor: 9, ..LEGACY },
    Layout {
        minor: 10,
        line_table: LineTable::Pep626,
        frame_instr: 96,
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
