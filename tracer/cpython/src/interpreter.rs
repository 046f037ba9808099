//! The interpreter of a process or a file: which file it is, its version, its allocator
//! functions, and the struct layouts tracer reads it with (from its debug offsets, or tracer's
//! table). Inspections are cached per file (a service forking workers is read once).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::allocator::{self, AllocatorHooks};
use crate::elf::Elf;
use crate::error::{Error, Result};
use crate::{debug_offsets, layouts, procfs};
use crate::{free_threaded_name, is_libpython, version_from_name, Version};

/// The interpreter of one target process.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// The file as the target process names it.
    pub target_path: String,
    /// The same file, opened from the tracer (through /proc/PID/root, or /proc/PID/map_files
    /// when that path now names another file, for running processes).
    pub open_path: PathBuf,
    /// Device and inode of the file: processes that map the same file share its probes.
    pub file_id: (u64, u64),
    /// True for libpython*.so, false for a python executable with the runtime linked in.
    pub shared: bool,
    pub version: Version,
    /// The file has a full symbol table (.symtab).
    pub has_symtab: bool,
    /// Load bias of the file in the target (runtime address = ELF address + bias), when mapped.
    pub bias: Option<u64>,
    pub alloc: AllocatorHooks,
    /// ELF addresses of `_PyRuntime` and `PyCode_Type` (for walking threads and checking code
    /// objects), when exported.
    pub runtime_vaddr: Option<u64>,
    pub code_type_vaddr: Option<u64>,
    /// ELF address of `PyType_Type` (watch mode tells objects from buffers with it).
    pub type_type_vaddr: Option<u64>,
    /// The first PT_LOAD page, to compute the load bias from /proc/PID/maps.
    pub first_load_page: u64,
    /// The struct layouts of this interpreter, if tracer can read it, and where they come from.
    pub layout: Option<&'static layouts::Layout>,
    pub layout_source: layouts::LayoutSource,
    /// A free-threaded build (debug table flag, or a `t` ABI suffix in the file name).
    pub free_threaded: bool,
}

impl Interpreter {
    /// The struct layouts of this interpreter, if tracer can read it.
    pub fn layout(&self) -> Option<&'static layouts::Layout> {
        self.layout
    }

    /// The one-line warning for an interpreter whose Python frames and heap cannot be read
    /// (None when they can).
    pub fn unreadable_warning(&self) -> Option<String> {
        let why = match &self.layout_source {
            layouts::LayoutSource::None(why) => why.clone(),
            _ if self.runtime_vaddr.is_none() || self.code_type_vaddr.is_none() => {
                "_PyRuntime or PyCode_Type is not exported".into()
            }
            _ => return None,
        };
        Some(unreadable_line(&self.version.to_string(), &why))
    }

    /// Load bias of the interpreter file in a process (None until it is mapped).
    pub fn bias_in(&self, pid: u32) -> Option<u64> {
        if let Some(b) = self.bias {
            return Some(b);
        }
        procfs::maps(pid)
            .ok()?
            .iter()
            .find(|m| m.path.as_deref() == Some(self.target_path.as_str()) && m.offset == 0)
            .map(|m| m.start.wrapping_sub(self.first_load_page))
    }
}

/// The warning line for an interpreter tracer cannot read: what is missing, what still works.
pub fn unreadable_line(version: &str, why: &str) -> String {
    format!(
        "WARNING: CPython {version}: {why}: no Python frames and no heap census for it; \
         descriptors (with native stacks) and, in exact mode, allocations where the probes attach \
         are still traced"
    )
}

/// Finds and inspects the interpreter of a running process.
pub fn inspect_pid(pid: u32) -> Result<Interpreter> {
    if procfs::stat(pid).is_some_and(|s| matches!(s.state, 'Z' | 'X')) {
        return Err(Error::Exited {
            pid,
            comm: procfs::comm(pid),
        });
    }
    let maps = match procfs::maps(pid) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NoSuchPid(pid)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(if unsafe { libc::geteuid() } == 0 {
                Error::Other(format!(
                    "cannot inspect pid {pid} ({}): /proc/{pid}/maps is refused even to root (a process of another user namespace, or one the kernel protects): trace the Python processes of its container or service instead",
                    procfs::comm(pid)
                ))
            } else {
                Error::NotPrivileged
            })
        }
        Err(e) => return Err(Error::Other(format!("cannot read /proc/{pid}/maps: {e}"))),
    };
    let not_python = || Error::NotPython {
        pid,
        comm: procfs::comm(pid),
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .ok();
    let lib = maps
        .iter()
        .filter_map(|m| m.path.as_deref())
        .find(|p| is_libpython(p))
        .map(str::to_string);
    let candidates: Vec<String> = lib.into_iter().chain(exe).collect();
    for path in candidates {
        let mut open_path = procfs::path_in_root(pid, &path);
        // The file the process maps, even if the path now names another one (upgraded in
        // place, or a mount namespace the tracer cannot see through).
        if let Some(m) = maps
            .iter()
            .find(|m| m.path.as_deref() == Some(path.as_str()) && m.offset == 0)
        {
            let same = std::fs::metadata(&open_path).is_ok_and(|md| md.ino() == m.inode);
            if !same {
                open_path = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end).into();
            }
        }
        let mapped_at = maps
            .iter()
            .find(|m| m.path.as_deref() == Some(path.as_str()) && m.offset == 0)
            .map(|m| m.start);
        // Another process of the same file was inspected already: its findings hold (the file
        // is read once however many processes run it: a service forking workers, a host
        // starting Pythons by the second).
        let key = std::fs::metadata(&open_path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), path.clone()));
        if let Some(mut i) = key.as_ref().and_then(cached) {
            i.open_path = open_path;
            i.bias = mapped_at.map(|s| s.wrapping_sub(i.first_load_page));
            return Ok(i);
        }
        let Ok(elf) = Elf::open(&open_path) else {
            continue;
        };
        if !elf.looks_like_python() {
            continue;
        }
        let bias = mapped_at.map(|s| s.wrapping_sub(elf.first_load_page()));
        let i = inspect(&elf, path, open_path, bias, Some(pid))?;
        if let Some(k) = key {
            remember(k, &i);
        }
        return Ok(i);
    }
    Err(not_python())
}

/// An interpreter file: device, inode, size, modification time, and the path the process
/// names it by.
type FileKey = (u64, u64, u64, i64, String);

static INSPECTED: std::sync::Mutex<Vec<(FileKey, Interpreter)>> = std::sync::Mutex::new(Vec::new());

fn cached(key: &FileKey) -> Option<Interpreter> {
    let c = INSPECTED.lock().ok()?;
    c.iter().find(|(k, _)| k == key).map(|(_, i)| i.clone())
}

fn remember(key: FileKey, i: &Interpreter) {
    if let Ok(mut c) = INSPECTED.lock() {
        if c.len() >= 64 {
            c.remove(0);
        }
        c.push((key, i.clone()));
    }
}

/// Inspects an interpreter file before it is mapped (launch mode).
pub fn inspect_file(target_path: &str, open_path: &Path) -> Result<Option<Interpreter>> {
    let elf = Elf::open(open_path)
        .map_err(|e| Error::Other(format!("cannot read {}: {e}", open_path.display())))?;
    if !elf.looks_like_python() {
        return Ok(None);
    }
    inspect(
        &elf,
        target_path.to_string(),
        open_path.to_path_buf(),
        None,
        None,
    )
    .map(Some)
}

fn inspect(
    elf: &Elf,
    target_path: String,
    open_path: PathBuf,
    bias: Option<u64>,
    pid: Option<u32>,
) -> Result<Interpreter> {
    let version = elf
        .py_version()
        .or_else(|| version_from_name(&target_path))
        .or_else(|| elf.version_string())
        .ok_or_else(|| Error::Other(format!("cannot tell the Python version of {target_path}")))?;
    if !version.supported() {
        let what = match pid {
            Some(pid) => format!("pid {pid} ({})", procfs::comm(pid)),
            None => target_path.clone(),
        };
        return Err(Error::Unsupported {
            what,
            version: version.to_string(),
        });
    }
    let live = match (pid, bias) {
        (Some(pid), Some(bias)) => Some((pid, bias)),
        _ => None,
    };
    let alloc = allocator::resolve(elf, live, version.minor);
    let file_id = std::fs::metadata(&open_path)
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| Error::Other(format!("cannot stat {}: {e}", open_path.display())))?;
    let runtime_vaddr = elf.dynsym("_PyRuntime").map(|s| s.addr);
    let (layout, layout_source, free_threaded) =
        layout_of(elf, version, runtime_vaddr, &target_path);
    Ok(Interpreter {
        shared: is_libpython(&target_path),
        target_path,
        open_path,
        file_id,
        version,
        has_symtab: elf.has_symtab(),
        bias,
        alloc,
        runtime_vaddr,
        code_type_vaddr: elf.dynsym("PyCode_Type").map(|s| s.addr),
        type_type_vaddr: elf.dynsym("PyType_Type").map(|s| s.addr),
        first_load_page: elf.first_load_page(),
        layout,
        layout_source,
        free_threaded,
    })
}

/// The layout of an interpreter file: from its `_Py_DebugOffsets` (3.13+, read from the file:
/// the table is initialised data of `_PyRuntime`, so it is there before the process maps it),
/// else from tracer's table. Free-threaded builds are refused.
fn layout_of(
    elf: &Elf,
    version: Version,
    runtime: Option<u64>,
    path: &str,
) -> (
    Option<&'static layouts::Layout>,
    layouts::LayoutSource,
    bool,
) {
    use layouts::LayoutSource;
    let free_threaded_refused = || {
        LayoutSource::None(
            "free-threaded build (objects have 32-byte headers and no gc lists; not supported)"
                .into(),
        )
    };
    if free_threaded_name(path) {
        return (None, free_threaded_refused(), true);
    }
    if version.minor < 13 {
        return match layouts::resolve(version.minor, None) {
            Some(l) => (Some(l), LayoutSource::Table, false),
            None => (
                None,
                LayoutSource::None(format!("tracer has no layout for CPython {version}")),
                false,
            ),
        };
    }
    let table = (|| {
        let rt = runtime.ok_or("_PyRuntime is not exported")?;
        let (groups, _) = debug_offsets::description(version.minor)
            .ok_or("no description of its debug offsets table")?;
        let len = debug_offsets::table_len(groups);
        let bytes = elf
            .read(rt, len)
            .ok_or("the debug offsets table is not in the file")?;
        debug_offsets::parse(bytes, version)
    })();
    match table {
        Ok(t) if t.free_threaded => (None, free_threaded_refused(), true),
        Ok(t) => match layouts::resolve(version.minor, Some(&t)) {
            Some(l) => {
                let newest = layouts::LAYOUTS.last().map(|l| l.minor).unwrap_or(0);
                (
                    Some(l),
                    LayoutSource::DebugOffsets {
                        base_minor: version.minor.min(newest),
                    },
                    false,
                )
            }
            None => (
                None,
                LayoutSource::None(format!("tracer has no layout for CPython {version}")),
                false,
            ),
        },
        Err(e) => (
            None,
            LayoutSource::None(format!("its debug offsets cannot be used: {e}")),
            false,
        ),
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::HookSource;
    use crate::interpreter_file_of_executable;

    /// The real interpreters every test machine has: pyenv's CPython 3.6-3.13 (shared
    /// libpython, full symbol tables) and Debian's static, stripped /usr/bin/python3.11. A
    /// missing or misread one fails.
    #[test]
    fn real_interpreter_files() {
        let versions: Vec<String> = std::fs::read_dir("/root/.pyenv/versions")
            .expect("pyenv's interpreters in /root/.pyenv/versions")
            .filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_string()))
            .collect();
        for minor in 6..=13u8 {
            let dir = versions
                .iter()
                .find(|v| v.starts_with(&format!("3.{minor}.")))
                .unwrap_or_else(|| panic!("no pyenv CPython 3.{minor} in {versions:?}"));
            let micro: u8 = dir.rsplit('.').next().unwrap().parse().unwrap();
            let abi = if minor < 8 { "m" } else { "" };
            let base = format!("/root/.pyenv/versions/{dir}");
            let lib = PathBuf::from(format!("{base}/lib/libpython3.{minor}{abi}.so.1.0"));
            let i = inspect_file(&lib.to_string_lossy(), &lib)
                .unwrap_or_else(|e| panic!("{}: {e}", lib.display()))
                .unwrap_or_else(|| panic!("{} is not seen as Python", lib.display()));
            let what = lib.display();
            assert_eq!(
                i.version,
                Version {
                    major: 3,
                    minor,
                    micro: (minor >= 11).then_some(micro),
                },
                "{what}"
            );
            assert!(i.has_symtab && i.shared, "{what}");
            assert_eq!(i.alloc.source, HookSource::Symtab, "{what}");
            assert_eq!(i.alloc.hooks.len(), 8, "{what}");
            assert!(!i.alloc.inlined_fast_path, "{what}");
            // _Py_NewReference is a function from 3.9 on (a header inline before).
            assert_eq!(i.alloc.new_reference.is_some(), minor >= 9, "{what}");
            // Dicts' keys free list: where tables are taken (all) and given back (until 3.12;
            // inlined in 3.13).
            assert_eq!(i.alloc.new_keys.is_some(), minor >= 8, "{what}");
            assert_eq!(
                i.alloc.free_keys.as_ref().map(|(_, arg)| *arg),
                match minor {
                    8..=11 => Some(0),
                    12 => Some(1),
                    _ => None,
                },
                "{what}"
            );
            assert_eq!(i.alloc.dict_from_items.is_some(), minor == 13, "{what}");
            // 3.8: the free lists' constructors instead; none before.
            assert_eq!(
                i.alloc.constructors.len(),
                if minor == 8 { 6 } else { 0 },
                "{what}"
            );
            assert_eq!(
                i.alloc
                    .notes
                    .iter()
                    .any(|n| n == allocator::NEW_REFERENCE_INLINED),
                minor < 8,
                "{what}"
            );
            // _PyRuntime exists from 3.7 on.
            assert_eq!(i.runtime_vaddr.is_some(), minor >= 7, "{what}");
            assert!(i.code_type_vaddr.is_some(), "{what}");
            // 3.8+ are read with tracer's layouts; 3.13 through its own debug table.
            assert_eq!(
                i.layout().map(|l| l.minor),
                (minor >= 8).then_some(minor),
                "{what}"
            );
            let source = match minor {
                ..=7 => "none",
                8..=12 => "table",
                _ => "debug",
            };
            assert_eq!(
                match i.layout_source {
                    layouts::LayoutSource::None(_) => "none",
                    layouts::LayoutSource::Table => "table",
                    layouts::LayoutSource::DebugOffsets { .. } => "debug",
                },
                source,
                "{what}"
            );
            let exe = PathBuf::from(format!("{base}/bin/python3.{minor}"));
            assert_eq!(
                interpreter_file_of_executable(&exe, None).as_deref(),
                Some(lib.as_path()),
                "{}",
                exe.display()
            );
        }
        let deb = Path::new("/usr/bin/python3.11");
        let i = inspect_file("/usr/bin/python3.11", deb)
            .expect("Debian's /usr/bin/python3.11")
            .expect("/usr/bin/python3.11 is seen as Python");
        assert_eq!((i.version.major, i.version.minor), (3, 11));
        assert!(!i.has_symtab && !i.shared);
        assert_eq!(i.alloc.source, HookSource::StaticTable);
        // raw malloc/calloc/realloc/free and pymalloc's four, found through the tables.
        assert_eq!(i.alloc.hooks.len(), 8);
        assert!(i.alloc.inlined_fast_path);
        assert!(i.alloc.new_reference.is_none());
        assert!(i
            .alloc
            .notes
            .iter()
            .any(|n| n == allocator::NEW_REFERENCE_INLINED));
        assert_eq!(i.layout_source, layouts::LayoutSource::Table);
        assert_eq!(
            interpreter_file_of_executable(deb, None).as_deref(),
            Some(deb)
        );
        assert!(inspect_file("/bin/sh", Path::new("/bin/sh"))
            .unwrap()
            .is_none());
    }

    /// Debian's 3.13.5, 3.14.10 and 3.15.2 (root file systems the tests build), when present:
    /// their layouts come from their debug tables.
    #[test]
    fn debug_table_layouts() {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
        for (rootfs, minor) in [("trixie", 13), ("sid", 14), ("sid", 15)] {
            let file = target.join(format!("rootfs-{rootfs}/usr/bin/python3.{minor}"));
            if !file.exists() {
                continue;
            }
            let i = inspect_file(&format!("/usr/bin/python3.{minor}"), &file)
                .unwrap()
                .unwrap();
            assert_eq!(
                i.layout_source,
                layouts::LayoutSource::DebugOffsets { base_minor: minor }
            );
            let l = i.layout().unwrap();
            assert_eq!(l.minor, minor);
            assert!(matches!(l.gc, layouts::GcHeads::Search { .. }));
            assert!(!i.free_threaded);
        }
        // A newer minor than tracer knows, with a table that validates (3.15's, as a "3.16"):
        // read with the newest description and table entry, without the opcode table.
        let file = target.join("rootfs-sid/usr/bin/python3.15");
        if let Ok(elf) = Elf::open(&file) {
            let rt = elf.dynsym("_PyRuntime").unwrap().addr;
            let (groups, _) = debug_offsets::description(15).unwrap();
            let mut table = elf
                .read(rt, debug_offsets::table_len(groups))
                .unwrap()
                .to_vec();
            table[8..16].copy_from_slice(&0x031000f0u64.to_le_bytes());
            let v316 = Version {
                major: 3,
                minor: 16,
                micro: Some(0),
            };
            let t = debug_offsets::parse(&table, v316).unwrap();
            assert!(!t.described);
            let l = layouts::resolve(16, Some(&t)).unwrap();
            let l315 = inspect_file("/usr/bin/python3.15", &file)
                .unwrap()
                .unwrap()
                .layout()
                .unwrap();
            assert_eq!(l.minor, 16);
            assert!(l.op_load_global.is_empty());
            assert_eq!(l.tstate_native_thread_id, l315.tstate_native_thread_id);
            assert_eq!(l.gc, l315.gc);
        }
    }
}
