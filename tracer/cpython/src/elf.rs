//! The few ELF facts tracer needs, on top of the `object` crate.

use std::io;
use std::path::Path;

use object::{
    Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _, SegmentFlags,
};

use crate::mem;
use crate::Version;

const PF_X: u32 = 1;
const PF_W: u32 = 2;
const R_X86_64_RELATIVE: u32 = 8;

pub struct Elf {
    data: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
pub struct Sym {
    pub addr: u64,
    pub size: u64,
}

impl Elf {
    pub fn open(path: &Path) -> io::Result<Elf> {
        let data = std::fs::read(path)?;
        object::File::parse(&*data)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(Elf { data })
    }

    fn file(&self) -> object::File<'_> {
        object::File::parse(&*self.data).expect("parsed in open")
    }

    pub fn has_symtab(&self) -> bool {
        self.file().symbols().next().is_some()
    }

    /// A dynamic (exported) symbol.
    pub fn dynsym(&self, name: &str) -> Option<Sym> {
        self.file()
            .dynamic_symbols()
            .find(|s| s.is_definition() && s.name() == Ok(name))
            .map(|s| Sym {
                addr: s.address(),
                size: s.size(),
            })
    }

    /// A function from .symtab, also under compiler-made names like `name.lto_priv.0`.
    pub fn local_function(&self, name: &str) -> Option<Sym> {
        self.file()
            .symbols()
            .filter(|s| {
                s.kind() == object::SymbolKind::Text && s.is_definition() && s.address() != 0
            })
            .find(|s| match s.name() {
                Ok(n) => {
                    n == name
                        || (n.starts_with(name) && n.as_bytes().get(name.len()) == Some(&b'.'))
                }
                Err(_) => false,
            })
            .map(|s| Sym {
                addr: s.address(),
                size: s.size(),
            })
    }

    pub fn looks_like_python(&self) -> bool {
        ["Py_Initialize", "PyObject_Malloc"]
            .iter()
            .all(|n| self.dynsym(n).is_some())
    }

    pub fn needs_libpython(&self) -> bool {
        self.needed_and_runpaths()
            .0
            .iter()
            .any(|n| n.starts_with("libpython"))
    }

    /// Lowest PT_LOAD address, page aligned: the address that maps at file offset 0.
    pub fn first_load_page(&self) -> u64 {
        self.file()
            .segments()
            .map(|s| s.address())
            .min()
            .unwrap_or(0)
            & !0xfff
    }

    fn segment_flags(&self, vaddr: u64) -> Option<u32> {
        self.file().segments().find_map(|s| {
            if vaddr >= s.address() && vaddr < s.address() + s.size() {
                match s.flags() {
                    SegmentFlags::Elf { p_flags } => Some(p_flags),
                    _ => Some(0),
                }
            } else {
                None
            }
        })
    }

    pub fn is_code(&self, vaddr: u64) -> bool {
        self.segment_flags(vaddr).is_some_and(|f| f & PF_X != 0)
    }

    /// Writable data that is not a GOT.
    pub fn is_data(&self, vaddr: u64) -> bool {
        if self.segment_flags(vaddr).is_none_or(|f| f & PF_W == 0) {
            return false;
        }
        let file = self.file();
        !file.sections().any(|s| {
            matches!(s.name(), Ok(".got") | Ok(".got.plt"))
                && vaddr >= s.address()
                && vaddr < s.address() + s.size()
        })
    }

    pub fn vaddr_to_offset(&self, vaddr: u64) -> Option<u64> {
        self.file().segments().find_map(|s| {
            let (off, fsize) = s.file_range();
            (vaddr >= s.address() && vaddr < s.address() + fsize).then(|| vaddr - s.address() + off)
        })
    }

    pub fn read(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        let off = self.vaddr_to_offset(vaddr)? as usize;
        self.data.get(off..off + len)
    }

    /// The link-time value of a pointer stored at `vaddr`: its R_X86_64_RELATIVE addend in a
    /// position-independent file, else the bytes in the file.
    pub fn static_pointer(&self, vaddr: u64) -> Option<u64> {
        let file = self.file();
        if let Some(relocs) = file.dynamic_relocations() {
            for (off, r) in relocs {
                if off == vaddr {
                    if let object::RelocationFlags::Elf {
                        r_type: R_X86_64_RELATIVE,
                    } = r.flags()
                    {
                        return Some(r.addend() as u64);
                    }
                }
            }
        }
        Some(mem::u64_at(self.read(vaddr, 8)?, 0usize))
    }

    /// `Py_Version` (3.11+): 0x030b07f0 -> 3.11.7.
    pub fn py_version(&self) -> Option<Version> {
        let s = self.dynsym("Py_Version")?;
        let v = mem::u32_at(self.read(s.addr, 4)?, 0usize);
        Some(Version {
            major: (v >> 24) as u8,
            minor: (v >> 16) as u8,
            micro: Some((v >> 8) as u8),
        })
    }

    /// Looks for the PY_VERSION string ("3.11.2") next to the build info in .rodata.
    pub fn version_string(&self) -> Option<Version> {
        let file = self.file();
        let ro = file.section_by_name(".rodata")?.data().ok()?;
        // PY_VERSION is stored as its own NUL-terminated string; it is followed in the binary by
        // the compiler string "[GCC ..." in the sys.version format. Accept the first "\03.N.M\0".
        ro.windows(9).find_map(|w| {
            if w[0] != 0 || w[1] != b'3' || w[2] != b'.' {
                return None;
            }
            let s = std::str::from_utf8(&w[1..]).ok()?;
            let s = s.split('\0').next()?;
            let mut p = s.split('.');
            let major = p.next()?.parse().ok()?;
            let minor = p.next()?.parse().ok()?;
            let micro = p.next()?.parse().ok()?;
            p.next().is_none().then_some(Version {
                major,
                minor,
                micro: Some(micro),
            })
        })
    }

    /// DT_NEEDED entries and DT_RUNPATH/DT_RPATH strings.
    pub fn needed_and_runpaths(&self) -> (Vec<String>, Vec<String>) {
        let file = self.file();
        let (Some(dynamic), Some(dynstr)) = (
            file.section_by_name(".dynamic"),
            file.section_by_name(".dynstr"),
        ) else {
            return (vec![], vec![]);
        };
        let (Ok(d), Ok(strs)) = (dynamic.data(), dynstr.data()) else {
            return (vec![], vec![]);
        };
        let get = |off: u64| -> Option<String> {
            let s = strs.get(off as usize..)?;
            let end = s.iter().position(|&b| b == 0)?;
            Some(String::from_utf8_lossy(&s[..end]).into_owned())
        };
        let (mut needed, mut paths) = (vec![], vec![]);
        for e in d.chunks_exact(16) {
            let (tag, val) = (mem::u64_at(e, 0usize), mem::u64_at(e, 8usize));
            match tag {
                0 => break,
                1 => needed.extend(get(val)),
                15 | 29 => paths.extend(get(val)),
                _ => {}
            }
        }
        (needed, paths)
    }
}
