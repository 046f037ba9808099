//! `tracer doctor`: what works here, and what tracer finds in a process.

use std::path::Path;

use crate::collect::hooks_of;
use crate::error::Result;
use crate::native;
use crate::probes::{self, Probes};
use crate::python::census::Census;
use crate::python::frames::{Check, Runtime};
use crate::python::layouts::GcHeads;
use crate::python::{self, HookSource};
use crate::render::summary::coverage_warning;
use crate::report::assess_coverage;
use crate::{outln, util};

fn line(ok: bool, what: &str, detail: &str) -> bool {
    outln!("[{}] {what}: {detail}", if ok { " ok " } else { "FAIL" });
    ok
}

pub fn run(pid: Option<u32>) -> Result<i32> {
    let mut all_ok = true;
    let privileged = util::require_privileges();
    all_ok &= line(
        privileged.is_ok(),
        "privileges",
        &match &privileged {
            Ok(()) => "root or CAP_BPF+CAP_PERFMON+CAP_SYS_PTRACE".into(),
            Err(e) => e.to_string(),
        },
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    line(true, "kernel", release.trim());
    let btf = Path::new("/sys/kernel/btf/vmlinux").exists();
    line(
        btf,
        "BTF",
        if btf {
            "/sys/kernel/btf/vmlinux"
        } else {
            "missing (not required today)"
        },
    );
    let kernel = probes::check_kernel();
    all_ok &= line(
        kernel.is_ok(),
        "uprobes",
        &kernel
            .as_ref()
            .map(|_| "perf uprobe PMU present".to_string())
            .unwrap_or_else(|e| e.to_string()),
    );
    let tracefs = std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .contains(" tracefs ");
    line(
        true,
        "tracefs",
        if tracefs {
            "mounted (not needed: tracer uses raw tracepoints)"
        } else {
            "not mounted (not needed: tracer uses raw tracepoints)"
        },
    );
    if privileged.is_ok() && kernel.is_ok() {
        let loaded = Probes::load();
        all_ok &= line(
            loaded.is_ok(),
            "BPF programs",
            &match &loaded {
                Ok(_) => "allocator uprobes load; raw tracepoint sys_exit attaches".to_string(),
                Err(e) => e.to_string(),
            },
        );
    }
    if let Some(pid) = pid {
        outln!();
        let interp = match python::inspect_pid(pid).map_err(crate::error::Error::from) {
            Ok(i) => i,
            Err(e) => {
                line(false, &format!("pid {pid}"), &e.to_string());
                return Ok(1);
            }
        };
        outln!("pid {pid} ({})", crate::procfs::comm(pid));
        outln!("  python:        CPython {}", interp.version);
        outln!(
            "  file probed:   {} ({})",
            interp.target_path,
            if interp.shared {
                "shared libpython"
            } else {
                "executable"
            }
        );
        if let Some(bias) = interp.bias {
            outln!("  load bias:     {bias:#x}");
        }
        outln!(
            "  symbols:       {}",
            if interp.has_symtab {
                ".symtab (full)"
            } else {
                ".dynsym only (stripped)"
            }
        );
        let source = match interp.alloc.source {
            HookSource::Symtab => "by name from .symtab",
            HookSource::LiveTable => "from the live allocator tables",
            HookSource::StaticTable => "from the allocator tables in the file",
            HookSource::None => "none found",
        };
        outln!("  allocator:     {source}");
        for h in &interp.alloc.hooks {
            let domains: Vec<&str> = h.domains.iter().map(|d| d.name()).collect();
            outln!(
                "    {:<22} {:?} for {} at file offset {:#x}",
                h.name,
                h.op,
                domains.join("+"),
                h.file_offset
            );
        }
        for n in &interp.alloc.notes {
            outln!("  note:          {n}");
        }
        let minor = interp.version.minor;
        outln!("  layout:        {}", interp.layout_source.describe(minor));
        if interp.free_threaded {
            outln!("  build:         free-threaded (refused)");
        }
        let live = match (
            interp.layout(),
            interp.runtime_vaddr,
            interp.code_type_vaddr,
            interp.bias,
        ) {
            (Some(l), Some(rt), Some(ct), Some(bias)) => {
                Some((l, rt.wrapping_add(bias), ct.wrapping_add(bias), bias))
            }
            _ => None,
        };
        match live {
            Some((l, rt, ct, bias)) => {
                let mut runtime = Runtime::new(pid, l, rt, ct);
                // A running target can tear a read of its frames: look a few times.
                let mut check = runtime.validate();
                for _ in 0..40 {
                    if !matches!(
                        check,
                        Check::Pending(_) | Check::ThreadsOnly | Check::NotRunning
                    ) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    check = runtime.validate();
                }
                outln!(
                    "  live check:    {}",
                    match &check {
                        Check::Valid => "passed (threads and frames decode)".to_string(),
                        Check::ThreadsOnly => {
                            "threads decode; no Python frame to check yet".to_string()
                        }
                        Check::Pending(why) => format!("undecided ({why})"),
                        Check::NotRunning => {
                            "undecided (the interpreter is not running: no thread list)".to_string()
                        }
                        Check::Invalid(why) => format!("FAILED ({why}): not used"),
                    }
                );
                if matches!(check, Check::Valid | Check::ThreadsOnly) {
                    outln!(
                        "  python stacks: yes (frames walked in the kernel; {} threads)",
                        runtime.threads().len()
                    );
                    let type_type = interp
                        .type_type_vaddr
                        .map(|v| v.wrapping_add(bias))
                        .unwrap_or(0);
                    let census = Census::new(pid, l, rt, type_type, crate::verdict::census_rules());
                    match census.find_heads() {
                        Ok(heads) => {
                            let at: Vec<String> = heads.iter().map(|h| h.to_string()).collect();
                            outln!(
                                "  heap census:   yes ({} gc list heads, at {} in the {})",
                                heads.len(),
                                at.join(", "),
                                if matches!(
                                    l.gc,
                                    GcHeads::Fixed {
                                        in_runtime: true,
                                        ..
                                    }
                                ) {
                                    "runtime state"
                                } else {
                                    "interpreter state"
                                }
                            );
                        }
                        Err(e) => outln!("  heap census:   no ({e})"),
                    }
                    if l.op_load_global.is_empty() {
                        outln!(
                            "  note:          no opcode table for 3.{minor}: the census does not \
                             name the lines that use a global"
                        );
                    }
                }
            }
            None => match interp.unreadable_warning() {
                Some(w) => outln!("  python stacks: no\n  {w}"),
                None => outln!("  python stacks: no (not mapped yet)"),
            },
        }
        native_frames(pid);
        resident(pid);
        match coverage_warning(&assess_coverage(&hooks_of(&interp), 0, 0.0)) {
            Some(w) => outln!("  coverage:      {w}"),
            None => outln!("  coverage:      the hooked functions are the allocator's entry points (measured while recording)"),
        }
    }
    Ok(if all_ok { 0 } else { 1 })
}

/// Where the process's resident memory is, read now.
fn resident(pid: u32) {
    use crate::render::summary::human_bytes;
    let Some(b) = crate::resident::Reader::default().read(pid) else {
        outln!("  resident:      not read (the process is gone, or /proc/{pid}/smaps is refused)");
        return;
    };
    outln!(
        "  resident:      {} (read in {} ms)",
        human_bytes(b.rss),
        b.took.as_millis()
    );
    for (part, bytes) in &b.parts {
        outln!("    {:>10}  {}", human_bytes(*bytes), part.label());
    }
    outln!(
        "    pymalloc: {} arenas, {} pools of {} ({} empty), {} in blocks in use; malloc: {} heaps, {} in use, {} free in {} chunks, {} trimmable, {} chunks mapped on their own ({}){}",
        b.pools.arenas,
        b.pools.pools,
        human_bytes(b.pools.pool_size),
        b.pools.empty_pools,
        human_bytes(b.pools.used),
        b.heaps.heaps,
        human_bytes(b.heaps.in_use),
        human_bytes(b.heaps.free),
        b.heaps.free_chunks,
        human_bytes(b.heaps.trimmable),
        b.heaps.mmapped,
        human_bytes(b.heaps.mmapped_bytes),
        if b.heaps.partial { "; the heap changed while it was read" } else { "" }
    );
    for n in &b.notes {
        outln!("    note: {n}");
    }
}

/// Per module mapped as code: can the kernel's frame-pointer walk be trusted through it?
fn native_frames(pid: u32) {
    outln!("  native frames: by module (the kernel walks native stacks by frame pointers)");
    let mut modules = native::Modules::default();
    let mut seen = std::collections::HashSet::new();
    for m in native::code_mappings(pid) {
        let path = m.path.clone().unwrap_or_default();
        if !seen.insert(path.clone()) {
            continue;
        }
        let verdict = match modules.module(pid, &m) {
            Some(x) if x.frame_pointers => format!(
                "frame pointers ({} of {} sampled functions set up a frame): native stacks are deep through it",
                x.with_frame, x.sampled
            ),
            Some(x) => format!(
                "no frame pointers ({} of {} sampled functions set up a frame): native stacks are cut after the first frame in it",
                x.with_frame, x.sampled
            ),
            None => "unreadable: native stacks are cut after the first frame in it".to_string(),
        };
        outln!("    {path}: {verdict}");
    }
}
