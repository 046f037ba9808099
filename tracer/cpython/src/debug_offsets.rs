//! CPython 3.13+ describes its own layout: `_Py_DebugOffsets`, a table of struct sizes and field
//! offsets at the very start of `_PyRuntime` (the `.PyRuntime` section, present in stripped
//! static builds too). Patch releases move fields (3.13.0 -> 3.13.5, 3.14.0 -> 3.14.5), so from
//! 3.13 on the offsets of the target itself are preferred over a table taken from one build.
//!
//! The table's own layout is fixed for a minor version but grows from one minor to the next: it
//! is described here as data, a list of groups of u64 fields per minor (checked against the raw
//! tables of Debian's 3.13.5, 3.14.10, 3.15.2 and pyenv's 3.13.0). A newer minor than the newest
//! described is read with the newest description and must pass the same validation.
//!
//! The table is untrusted input: it is used only if the cookie, the version, the free-threading
//! flag, every group's size and every offset inside its struct pass the checks below; the user
//! side then checks it live (see `frames::Runtime::validate`).

use crate::mem;
use crate::Version;

/// The groups of u64 fields after the header (cookie, version, free_threaded), in order.
type Groups = &'static [(&'static str, &'static str)];

const V313: Groups = &[
    ("runtime_state", "size finalizing interpreters_head"),
    (
        "interpreter_state",
        "size id next threads_head gc imports_modules sysdict builtins ceval_gil \
         gil_runtime_state gil_runtime_state_enabled gil_runtime_state_locked \
         gil_runtime_state_holder",
    ),
    (
        "thread_state",
        "size prev next interp current_frame thread_id native_thread_id datastack_chunk status",
    ),
    (
        "interpreter_frame",
        "size previous executable instr_ptr localsplus owner",
    ),
    (
        "code_object",
        "size filename name qualname linetable firstlineno argcount localsplusnames \
         localspluskinds co_code_adaptive",
    ),
    ("pyobject", "size ob_type"),
    ("type_object", "size tp_name tp_repr tp_flags"),
    ("tuple_object", "size ob_item ob_size"),
    ("list_object", "size ob_item ob_size"),
    ("dict_object", "size ma_keys ma_values"),
    ("float_object", "size ob_fval"),
    ("long_object", "size lv_tag ob_digit"),
    ("bytes_object", "size ob_size ob_sval"),
    ("unicode_object", "size state length asciiobject_size"),
    ("gc", "size collecting"),
];

/// 3.14: thread lists' main thread, code generations, stack pointer and per-thread bytecode
/// (free-threaded), sets, generators, the remote debugger's fields.
const V314: Groups = &[
    ("runtime_state", "size finalizing interpreters_head"),
    (
        "interpreter_state",
        "size id next threads_head threads_main gc imports_modules sysdict builtins ceval_gil \
         gil_runtime_state gil_runtime_state_enabled gil_runtime_state_locked \
         gil_runtime_state_holder code_object_generation tlbc_generation",
    ),
    (
        "thread_state",
        "size prev next interp current_frame thread_id native_thread_id datastack_chunk status",
    ),
    (
        "interpreter_frame",
        "size previous executable instr_ptr localsplus owner stackpointer tlbc_index",
    ),
    (
        "code_object",
        "size filename name qualname linetable firstlineno argcount localsplusnames \
         localspluskinds co_code_adaptive co_tlbc",
    ),
    ("pyobject", "size ob_type"),
    ("type_object", "size tp_name tp_repr tp_flags"),
    ("tuple_object", "size ob_item ob_size"),
    ("list_object", "size ob_item ob_size"),
    ("set_object", "size used table mask"),
    ("dict_object", "size ma_keys ma_values"),
    ("float_object", "size ob_fval"),
    ("long_object", "size lv_tag ob_digit"),
    ("bytes_object", "size ob_size ob_sval"),
    ("unicode_object", "size state length asciiobject_size"),
    ("gc", "size collecting"),
    ("gen_object", "size gi_name gi_iframe gi_frame_state"),
    ("llist_node", "next prev"),
    (
        "debugger_support",
        "eval_breaker remote_debugger_support remote_debugging_enabled debugger_pending_call \
         debugger_script_path debugger_script_path_size",
    ),
];

/// 3.15: more thread state fields, the exception stack item, type basicsize/dictoffset, heap
/// types' cached keys, compact unicode size, gc statistics.
const V315: Groups = &[
    ("runtime_state", "size finalizing interpreters_head"),
    (
        "interpreter_state",
        "size id next threads_head threads_main gc imports_modules sysdict builtins ceval_gil \
         gil_runtime_state gil_runtime_state_enabled gil_runtime_state_locked \
         gil_runtime_state_holder code_object_generation tlbc_generation",
    ),
    (
        "thread_state",
        "size prev next interp current_frame base_frame last_profiled_frame \
         last_profiled_frame_seq thread_id native_thread_id datastack_chunk status holds_gil \
         gil_requested current_exception exc_state",
    ),
    ("err_stackitem", "exc_value"),
    (
        "interpreter_frame",
        "size previous executable instr_ptr localsplus owner stackpointer tlbc_index",
    ),
    (
        "code_object",
        "size filename name qualname linetable firstlineno argcount localsplusnames \
         localspluskinds co_code_adaptive co_tlbc",
    ),
    ("pyobject", "size ob_type"),
    (
        "type_object",
        "size tp_name tp_repr tp_flags tp_basicsize tp_dictoffset",
    ),
    ("heap_type_object", "size ht_cached_keys"),
    ("tuple_object", "size ob_item ob_size"),
    ("list_object", "size ob_item ob_size"),
    ("set_object", "size used table mask"),
    ("dict_object", "size ma_keys ma_values"),
    ("float_object", "size ob_fval"),
    ("long_object", "size lv_tag ob_digit"),
    ("bytes_object", "size ob_size ob_sval"),
    (
        "unicode_object",
        "size state length asciiobject_size compactunicodeobject_size",
    ),
    (
        "gc",
        "size collecting frame generation_stats_size generation_stats",
    ),
    ("gen_object", "size gi_name gi_iframe gi_frame_state"),
    ("llist_node", "next prev"),
    (
        "debugger_support",
        "eval_breaker remote_debugger_support remote_debugging_enabled debugger_pending_call \
         debugger_script_path debugger_script_path_size",
    ),
];

/// The table's description per minor version (3.X).
const DESCRIPTIONS: &[(u8, Groups)] = &[(13, V313), (14, V314), (15, V315)];

/// The description used for a minor version, and whether it is that minor's own (false: a newer
/// minor read with the newest description).
pub fn description(minor: u8) -> Option<(Groups, bool)> {
    if minor < 13 {
        return None;
    }
    if let Some((_, g)) = DESCRIPTIONS.iter().find(|d| d.0 == minor) {
        return Some((g, true));
    }
    let newest = DESCRIPTIONS.last()?;
    (minor > newest.0).then_some((newest.1, false))
}

/// Bytes of the table for a description (header included).
pub fn table_len(groups: Groups) -> usize {
    24 + 8 * groups
        .iter()
        .map(|g| g.1.split_whitespace().count())
        .sum::<usize>()
}

/// A decoded and validated table.
#[derive(Debug, Clone, PartialEq)]
pub struct DebugOffsets {
    /// PY_VERSION_HEX of the build.
    pub version_hex: u64,
    pub free_threaded: bool,
    /// The target's minor version has its own description (else the newest one was used).
    pub described: bool,
    fields: Vec<(String, u64)>,
}

impl DebugOffsets {
    /// A field by "group.field".
    pub fn get(&self, name: &str) -> Option<u64> {
        self.fields.iter().find(|f| f.0 == name).map(|f| f.1)
    }

    /// A field the description of every minor has (a missing one is a bug in this file).
    pub fn at(&self, name: &str) -> u64 {
        self.get(name).unwrap_or(0)
    }
}

/// Plausible struct sizes per group (bytes), free-threaded builds included.
fn size_range(group: &str) -> (u64, u64) {
    match group {
        "runtime_state" | "interpreter_state" => (1024, 16 << 20),
        "thread_state" => (128, 64 << 10),
        "interpreter_frame" => (48, 1024),
        "code_object" => (96, 4096),
        "pyobject" => (16, 32),
        "type_object" => (256, 2048),
        "heap_type_object" => (256, 4096),
        "unicode_object" => (32, 256),
        "gc" => (16, 64 << 10),
        "gen_object" => (32, 4096),
        _ => (16, 4096),
    }
}

/// Fields that are sizes or flags, not offsets inside their group's struct.
fn not_an_offset(group: &str, field: &str) -> bool {
    matches!(
        field,
        "asciiobject_size" | "compactunicodeobject_size" | "generation_stats_size"
    ) || matches!(group, "llist_node" | "debugger_support" | "err_stackitem")
}

/// Fields tracer reads as pointers: they must be 8-byte aligned.
const POINTERS: &[&str] = &[
    "runtime_state.interpreters_head",
    "interpreter_state.threads_head",
    "thread_state.next",
    "thread_state.current_frame",
    "interpreter_frame.previous",
    "interpreter_frame.executable",
    "interpreter_frame.instr_ptr",
    "code_object.filename",
    "code_object.name",
    "code_object.linetable",
    "code_object.localsplusnames",
    "pyobject.ob_type",
    "type_object.tp_name",
    "list_object.ob_item",
    "dict_object.ma_keys",
];

/// Decodes and validates the table at the start of `bytes` (the first bytes of `_PyRuntime`) for
/// an interpreter detected as `version`. Err says what is wrong.
pub fn parse(bytes: &[u8], version: Version) -> Result<DebugOffsets, String> {
    if version.major != 3 {
        return Err(format!("no debug offsets in Python {version}"));
    }
    let (groups, described) = description(version.minor)
        .ok_or_else(|| format!("CPython {version} has no debug offsets table"))?;
    if bytes.len() < 24 {
        return Err("the debug offsets table is cut short".into());
    }
    if &bytes[..8] != b"xdebugpy" {
        return Err("no debug offsets cookie (\"xdebugpy\") at the start of _PyRuntime".into());
    }
    let word = |i: usize| mem::u64_at(bytes, i);
    let version_hex = word(8);
    let (major, minor, micro) = (
        (version_hex >> 24) & 0xff,
        (version_hex >> 16) & 0xff,
        (version_hex >> 8) & 0xff,
    );
    if major != version.major as u64
        || minor != version.minor as u64
        || version.micro.is_some_and(|m| m as u64 != micro)
    {
        return Err(format!(
            "the debug offsets say version {major}.{minor}.{micro}, the interpreter is {version}"
        ));
    }
    let free_threaded = match word(16) {
        0 => false,
        1 => true,
        v => return Err(format!("the debug offsets' free_threaded flag is {v}")),
    };
    let len = table_len(groups);
    if bytes.len() < len {
        return Err(format!(
            "the debug offsets table is {} bytes, {len} expected",
            bytes.len()
        ));
    }
    let mut fields = Vec::new();
    let mut at = 24;
    for (group, names) in groups {
        let mut size = None;
        for name in names.split_whitespace() {
            let v = word(at);
            at += 8;
            let full = format!("{group}.{name}");
            if name == "size" {
                let (lo, hi) = size_range(group);
                if !(lo..=hi).contains(&v) {
                    return Err(format!("implausible size {v} of {group}"));
                }
                size = Some(v);
            } else if !not_an_offset(group, name) {
                if let Some(s) = size {
                    if v >= s {
                        return Err(format!("{full} = {v} is outside its struct ({s} bytes)"));
                    }
                }
                if POINTERS.contains(&full.as_str()) && v % 8 != 0 {
                    return Err(format!("{full} = {v} is not pointer-aligned"));
                }
            }
            fields.push((full, v));
        }
    }
    let t = DebugOffsets {
        version_hex,
        free_threaded,
        described,
        fields,
    };
    // The header of an object: 16 bytes (ob_type at 8), 32 in free-threaded builds.
    let header = t.at("pyobject.size");
    if header != if free_threaded { 32 } else { 16 } {
        return Err(format!(
            "object header of {header} bytes in a {}build",
            if free_threaded { "free-threaded " } else { "" }
        ));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(minor: u8, micro: u8) -> Version {
        Version {
            major: 3,
            minor,
            micro: Some(micro),
        }
    }

    /// A well-formed 3.13 table (the offsets of 3.13.5).
    fn table_313() -> Vec<u8> {
        let words: &[u64] = &[
            283376, 608, 632, // runtime
            194976, 7272, 7264, 7344, 7400, 7656, 7640, 7648, 16, 7752, 0, 7768,
            7760, // interp
            304, 0, 8, 16, 72, 152, 160, 232, 32, // thread
            80, 8, 0, 56, 72, 70, // frame
            208, 112, 120, 128, 136, 68, 52, 96, 104, 200, // code
            16, 8, // object
            416, 24, 88, 168, // type
            32, 24, 16, // tuple
            40, 24, 16, // list
            48, 32, 40, // dict
            24, 16, // float
            32, 16, 24, // long
            40, 16, 32, // bytes
            64, 32, 16, 40, // unicode
            240, 200, // gc
        ];
        let mut b = b"xdebugpy".to_vec();
        b.extend(0x030d05f0u64.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        for w in words {
            b.extend(w.to_le_bytes());
        }
        b
    }

    #[test]
    fn descriptions() {
        assert_eq!(table_len(V313), 584);
        assert_eq!(table_len(V314), 760);
        assert_eq!(table_len(V315), 888);
        assert!(description(12).is_none());
        assert!(description(14).unwrap().1);
        // A newer minor is read with the newest description, and says so.
        let (g, own) = description(16).unwrap();
        assert!(!own && g == V315);
    }

    #[test]
    fn well_formed_table() {
        let t = parse(&table_313(), v(13, 5)).unwrap();
        assert!(!t.free_threaded && t.described);
        assert_eq!(t.get("runtime_state.interpreters_head"), Some(632));
        assert_eq!(t.get("thread_state.native_thread_id"), Some(160));
        assert_eq!(t.get("interpreter_frame.owner"), Some(70));
        assert_eq!(t.get("gc.collecting"), Some(200));
        // Without a micro version, the minor must match.
        let unknown_micro = Version {
            major: 3,
            minor: 13,
            micro: None,
        };
        assert!(parse(&table_313(), unknown_micro).is_ok());
    }

    #[test]
    fn corrupted_tables_are_refused() {
        let good = table_313();
        let with = |at: usize, val: u64| {
            let mut b = good.clone();
            b[at..at + 8].copy_from_slice(&val.to_le_bytes());
            b
        };
        let mut bad_cookie = good.clone();
        bad_cookie[0] = b'y';
        let cases: Vec<(Vec<u8>, Version, &str)> = vec![
            (bad_cookie, v(13, 5), "cookie"),
            (good.clone(), v(13, 4), "version 3.13.5"),
            (good.clone(), v(14, 5), "version"),
            (with(16, 7), v(13, 5), "free_threaded"),
            (good[..300].to_vec(), v(13, 5), "bytes"),
            // runtime size absurd
            (with(24, 12), v(13, 5), "size"),
            // interpreters_head beyond the runtime's size
            (with(40, 1 << 30), v(13, 5), "outside"),
            // current_frame misaligned (thread_state group: 152 + 4 * 8)
            (with(184, 73), v(13, 5), "aligned"),
            // frame owner beyond the frame (frame group starts at 224: owner at 264)
            (with(264, 4000), v(13, 5), "outside"),
            // object header of 24 bytes
            (with(352, 24), v(13, 5), "header"),
        ];
        for (bytes, ver, why) in cases {
            let e = parse(&bytes, ver).unwrap_err();
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn free_threaded_flag() {
        let mut b = table_313();
        b[16..24].copy_from_slice(&1u64.to_le_bytes());
        // A free-threaded build has a 32-byte object header.
        assert!(parse(&b, v(13, 5)).unwrap_err().contains("header"));
        b[352..360].copy_from_slice(&32u64.to_le_bytes());
        assert!(parse(&b, v(13, 5)).unwrap().free_threaded);
    }

    /// The tables of the real builds, when their files are on this machine.
    #[test]
    fn real_tables() {
        for (path, minor) in [
            ("/root/.pyenv/versions/3.13.0/lib/libpython3.13.so.1.0", 13),
            ("/work/rootfs/trixie/usr/bin/python3.13", 13),
            ("/work/rootfs/sid/usr/bin/python3.14", 14),
            ("/work/rootfs/sid/usr/bin/python3.15", 15),
        ] {
            let p = std::path::Path::new(path);
            let Ok(elf) = super::super::elf::Elf::open(p) else {
                continue;
            };
            let ver = elf.py_version().unwrap();
            let rt = elf.dynsym("_PyRuntime").unwrap().addr;
            let (g, _) = description(minor).unwrap();
            let t = parse(elf.read(rt, table_len(g)).unwrap(), ver).unwrap();
            assert_eq!(t.at("thread_state.next"), 8, "{path}");
            assert_eq!(t.at("interpreter_frame.executable"), 0, "{path}");
            assert_eq!(t.at("pyobject.ob_type"), 8, "{path}");
        }
    }
}
