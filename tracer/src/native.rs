//! Which native frames can be trusted. The kernel walks user stacks by frame pointers; through
//! code built without them the walk reads whatever the register holds, and yields addresses in
//! data (named by data symbols such as PyType_Type) or nowhere. A frame is kept when the walk to
//! it is sound: the first frame (the probed function, the syscall wrapper) always; a deeper one
//! only when the module of the frame above it keeps frame pointers (decided per file, once, by
//! sampling its functions' prologues) and it is a plausible return address (in an executable
//! file mapping, right after a call instruction). The stack is cut where that stops.

use std::collections::{HashMap, HashSet};
use std::fs::File;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

use crate::procfs::{self, MapEntry};

/// Functions sampled per file to decide whether it keeps frame pointers.
const SAMPLE: usize = 400;
/// Share of the sampled functions that must set up a frame (`push %rbp; mov %rsp,%rbp`).
/// Built with frame pointers, most do (leaf functions and hand-written assembly may not);
/// without, almost none (0 to 2% in this machine's libc, libm, libpython builds).
const FP_SHARE: f64 = 0.3;
/// Bytes read at the start of each sampled function.
const PROLOGUE: usize = 48;

/// Does the code right before a return address end with a call instruction? `before` holds the
/// bytes that precede it (up to 7, the last one right before the return address): a direct call
/// (`e8 rel32`) or an indirect one (`ff /2`, optionally after a REX prefix, any addressing form
/// that ends there).
pub fn is_call_before(before: &[u8]) -> bool {
    let n = before.len();
    if n >= 5 && before[n - 5] == 0xe8 {
        return true;
    }
    (2..=n.min(7)).any(|len| {
        let mut i = n - len;
        if (0x40..=0x4f).contains(&before[i]) {
            i += 1;
        }
        if i + 1 >= n || before[i] != 0xff {
            return false;
        }
        let modrm = before[i + 1];
        if (modrm >> 3) & 7 != 2 {
            return false;
        }
        modrm_operand_len(modrm, before.get(i + 2).copied()).is_some_and(|l| i + 1 + l == n)
    })
}

/// Bytes taken by a ModRM byte and what follows it (SIB, displacement) in 64-bit mode; None when
/// a SIB byte is needed and not given.
fn modrm_operand_len(modrm: u8, sib: Option<u8>) -> Option<usize> {
    let (md, rm) = (modrm >> 6, modrm & 7);
    if md == 3 {
        return Some(1);
    }
    let mut len = 1;
    if rm == 4 {
        let sib = sib?;
        len += 1;
        if md == 0 && sib & 7 == 5 {
            len += 4;
        }
    } else if md == 0 && rm == 5 {
        len += 4; // RIP-relative
    }
    len += match md {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    Some(len)
}

/// Does a function set up a frame pointer (`push %rbp; mov %rsp,%rbp`) in its first bytes
/// `code`? Usually first (after an `endbr64`), sometimes after an early-exit test the compiler
/// moved ahead of it (shrink-wrapping). Code built without frame pointers never copies %rsp to
/// %rbp, but in the rare functions that need a frame (alloca).
pub fn sets_up_frame(code: &[u8]) -> bool {
    code.windows(4)
        .any(|w| w == [0x55, 0x48, 0x89, 0xe5] || w == [0x55, 0x48, 0x8b, 0xec])
}

/// What tracer knows of one module file.
#[derive(Debug, Clone, Default)]
pub struct Module {
    /// Built with frame pointers (the walk through its frames is sound).
    pub frame_pointers: bool,
    /// Functions sampled, and how many of them set up a frame.
    pub sampled: usize,
    pub with_frame: usize,
    /// Names of its data symbols (objects, thread-locals).
    pub data_symbols: HashSet<String>,
}

/// Reads what `Module` says from an ELF file (symbols and the first bytes of sampled functions
/// only, not the whole file).
pub fn inspect(file: File) -> Option<Module> {
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let mut funcs: Vec<(u64, object::SectionIndex)> = Vec::new();
    let mut data_symbols = HashSet::new();
    for sym in elf.symbols().chain(elf.dynamic_symbols()) {
        if !sym.is_definition() {
            continue;
        }
        match sym.kind() {
            SymbolKind::Text if sym.size() >= 8 => {
                if let Some(s) = sym.section_index() {
                    funcs.push((sym.address(), s));
                }
            }
            SymbolKind::Data | SymbolKind::Tls => {
                if let Ok(n) = sym.name() {
                    data_symbols.insert(n.to_string());
                }
            }
            _ => {}
        }
    }
    funcs.sort_unstable_by_key(|f| f.0);
    funcs.dedup_by_key(|f| f.0);
    let step = funcs.len().div_ceil(SAMPLE).max(1);
    let mut sampled = 0;
    let mut with_frame = 0;
    for &(addr, si) in funcs.iter().step_by(step) {
        let Ok(sec) = elf.section_by_index(si) else {
            continue;
        };
        let Some((off, size)) = sec.file_range() else {
            continue;
        };
        let Some(at) = addr.checked_sub(sec.address()).filter(|&d| d < size) else {
            continue;
        };
        let len = (size - at).min(PROLOGUE as u64);
        let Ok(code) = object::ReadRef::read_bytes_at(&cache, off + at, len) else {
            continue;
        };
        sampled += 1;
        with_frame += sets_up_frame(code) as usize;
    }
    Some(Module {
        frame_pointers: sampled > 0 && with_frame as f64 >= FP_SHARE * sampled as f64,
        sampled,
        with_frame,
        data_symbols,
    })
}

/// The executable file mappings of a process (maps lines with `x` and a path).
pub fn code_mappings(pid: u32) -> Vec<MapEntry> {
    procfs::maps(pid)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.perms.contains('x') && m.path.as_deref().is_some_and(|p| p.starts_with('/')))
        .collect()
}

/// Opens a mapped file as the process sees it (through map_files, else its root).
fn open_mapped(pid: u32, m: &MapEntry) -> Option<File> {
    File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
        .ok()
        .or_else(|| File::open(procfs::path_in_root(pid, m.path.as_deref()?)).ok())
}

/// Module facts by file (path and inode), and each process's code mappings.
#[derive(Default)]
pub struct Modules {
    files: HashMap<(String, u64), Option<Module>>,
    maps: HashMap<u32, Vec<MapEntry>>,
}

impl Modules {
    /// The module of a mapping (inspected the first time its file is seen).
    pub fn module(&mut self, pid: u32, m: &MapEntry) -> Option<&Module> {
        let key = (m.path.clone().unwrap_or_default(), m.inode);
        self.files
            .entry(key)
            .or_insert_with(|| open_mapped(pid, m).and_then(inspect))
            .as_ref()
    }

    /// The code mapping holding `ip`, the maps re-read once if none does.
    fn mapping(&mut self, pid: u32, ip: u64, reread: &mut bool) -> Option<MapEntry> {
        let find =
            |maps: &Vec<MapEntry>| maps.iter().find(|m| m.start <= ip && ip < m.end).cloned();
        if let Some(m) = self.maps.get(&pid).and_then(find) {
            return Some(m);
        }
        if !*reread {
            *reread = true;
            self.maps.insert(pid, code_mappings(pid));
            return self.maps.get(&pid).and_then(find);
        }
        None
    }

    /// How many frames of a stack (leaf first, as the kernel walked it) can be trusted.
    pub fn trusted_len(&mut self, pid: u32, ips: &[u64]) -> usize {
        if ips.is_empty() {
            return 0;
        }
        let mut reread = false;
        let mut above = self.mapping(pid, ips[0], &mut reread);
        for (i, &ip) in ips.iter().enumerate().skip(1) {
            let walk_sound = match &above {
                Some(m) => self
                    .module(pid, &m.clone())
                    .is_some_and(|x| x.frame_pointers),
                None => false,
            };
            if !walk_sound {
                return i;
            }
            let Some(here) = self.mapping(pid, ip, &mut reread) else {
                return i;
            };
            let from = ip.saturating_sub(7).max(here.start);
            let call = ip > from
                && procfs::read_mem(pid, from, (ip - from) as usize)
                    .is_ok_and(|b| is_call_before(&b));
            if !call {
                return i;
            }
            above = Some(here);
        }
        ips.len()
    }

    /// Is `name`, the symbol found for `ip`, a data symbol of the module there?
    pub fn is_data_symbol(&mut self, pid: u32, ip: u64, name: &str) -> bool {
        let mut reread = true; // the maps were read for this stack already
        let Some(m) = self.mapping(pid, ip, &mut reread) else {
            return false;
        };
        self.module(pid, &m)
            .is_some_and(|x| x.data_symbols.contains(name))
    }

    /// Forgets a process's mappings.
    pub fn forget(&mut self, pid: u32) {
        self.maps.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_instructions_before_return_addresses() {
        // call rel32
        assert!(is_call_before(&[0x90, 0x90, 0xe8, 0x10, 0x20, 0x30, 0x40]));
        // call *%rax; call *%r8 (REX.B)
        assert!(is_call_before(&[0x48, 0x89, 0xc7, 0x90, 0x90, 0xff, 0xd0]));
        assert!(is_call_before(&[0x90, 0x90, 0x90, 0x90, 0x41, 0xff, 0xd0]));
        // call *(%rax); call *0x8(%rax); call *0x10(%rsp) (SIB, disp8)
        assert!(is_call_before(&[0xff, 0x10]));
        assert!(is_call_before(&[0x90, 0x90, 0x90, 0x90, 0xff, 0x50, 0x08]));
        assert!(is_call_before(&[0x90, 0x90, 0x90, 0xff, 0x54, 0x24, 0x10]));
        // call *0x12345678(%rip); call *0x100(%rax) (disp32); call *0x100(%r12) (REX, SIB)
        assert!(is_call_before(&[0x90, 0xff, 0x15, 0x78, 0x56, 0x34, 0x12]));
        assert!(is_call_before(&[0x90, 0xff, 0x90, 0x00, 0x01, 0x00, 0x00]));
        assert!(is_call_before(
            &[0x41, 0xff, 0x94, 0x24, 0x00, 0x01, 0x00, 0x00][1..]
        ));
        // Not calls: a jmp rel32, a ret, an indirect jmp (ff /4), push (ff /6), data.
        assert!(!is_call_before(&[0x90, 0x90, 0xe9, 0x10, 0x20, 0x30, 0x40]));
        assert!(!is_call_before(&[0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0xc3]));
        assert!(!is_call_before(&[0x90, 0x90, 0x90, 0x90, 0x90, 0xff, 0xe0]));
        assert!(!is_call_before(&[0x90, 0x90, 0x90, 0x90, 0xff, 0x70, 0x08]));
        assert!(!is_call_before(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]));
        // ff /2 whose operand would run past the return address (or stop short of it).
        assert!(!is_call_before(&[0x90, 0x90, 0x90, 0x90, 0x90, 0xff, 0x50]));
        assert!(!is_call_before(&[0x90, 0x90, 0x90, 0xff, 0xd0, 0x90, 0x90]));
        assert!(!is_call_before(&[]));
    }

    /// Builds a small C program with and without frame pointers (when a C compiler is there)
    /// and checks what `inspect` says of each.
    #[test]
    fn frame_pointer_builds_told_apart() {
        let dir = std::env::temp_dir().join(format!("tracer-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("f.c");
        let mut c = String::from(
            "int table[64] = {1};\n__attribute__((noinline)) int sink(int s) { return s ^ table[s & 63]; }\n",
        );
        for i in 0..40 {
            c += &format!(
                "__attribute__((noinline)) int f{i}(int *p, int n) {{ int s = 0; for (int j = 0; j < n; j++) s += sink(p[j] * {i}); return sink(s) + 1; }}\n"
            );
        }
        c += "int main(int argc, char **argv) { int s = 0;\n";
        for i in 0..40 {
            c += &format!("s += f{i}(table, argc * 7);\n");
        }
        c += "return s; }\n";
        std::fs::write(&src, c).unwrap();
        let build = |out: &str, flags: &[&str]| -> Option<std::path::PathBuf> {
            let o = dir.join(out);
            let st = std::process::Command::new("cc")
                .args(["-O2", "-o"])
                .arg(&o)
                .arg(&src)
                .args(flags)
                .status()
                .ok()?;
            st.success().then_some(o)
        };
        let Some(fp) = build(
            "fp",
            &["-fno-omit-frame-pointer", "-mno-omit-leaf-frame-pointer"],
        ) else {
            eprintln!("no C compiler: skipped");
            return;
        };
        let nofp = build("nofp", &["-fomit-frame-pointer"]).unwrap();
        let with = inspect(File::open(fp).unwrap()).unwrap();
        let without = inspect(File::open(nofp).unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(with.frame_pointers, "{with:?}");
        assert!(with.sampled >= 40, "{with:?}");
        assert!(!without.frame_pointers, "{without:?}");
        assert!(without.data_symbols.contains("table"));
        assert!(!without.data_symbols.contains("f1"));
    }

    #[test]
    fn frame_setup_prologues() {
        assert!(sets_up_frame(&[0x55, 0x48, 0x89, 0xe5, 0x41, 0x57]));
        // after an early exit (test %esi,%esi; jle)
        assert!(sets_up_frame(&[
            0x85, 0xf6, 0x7e, 0x3c, 0x55, 0x48, 0x89, 0xe5
        ]));
        assert!(sets_up_frame(&[
            0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5
        ]));
        // push %rbp as a callee-saved register, no frame: not a frame pointer.
        assert!(!sets_up_frame(&[0x55, 0x53, 0x48, 0x83, 0xec, 0x08]));
        assert!(!sets_up_frame(&[0x41, 0x57, 0x41, 0x56, 0x55, 0x48]));
        assert!(!sets_up_frame(&[0x55]));
    }
}
