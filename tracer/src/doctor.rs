//! `tracer doctor`: what works here, and what tracer finds in a process.

use std::path::Path;

use crate::error::Result;
use crate::native;
use crate::probes::{self, Probes};
use crate::python::{self, HookSource};
use crate::render::summary::coverage_warning;
use crate::report::assess_coverage;
use crate::util;

fn line(ok: bool, what: &str, detail: &str) -> bool {
    println!("[{}] {what}: {detail}", if ok { " ok " } else { "FAIL" });
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
        println!();
        let interp = match python::inspect_pid(pid) {
            Ok(i) => i,
            Err(e) => {
                line(false, &format!("pid {pid}"), &e.to_string());
                return Ok(1);
            }
        };
        println!("pid {pid} ({})", crate::procfs::comm(pid));
        println!("  python:        CPython {}", interp.version);
        println!(
            "  file probed:   {} ({})",
            interp.target_path,
            if interp.shared {
                "shared libpython"
            } else {
                "executable"
            }
        );
        if let Some(bias) = interp.bias {
            println!("  load bias:     {bias:#x}");
        }
        println!(
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
        println!("  allocator:     {source}");
        for h in &interp.alloc.hooks {
            let domains: Vec<&str> = h.domains.iter().map(|d| d.name()).collect();
            println!(
                "    {:<22} {:?} for {} at file offset {:#x}",
                h.name,
                h.op,
                domains.join("+"),
                h.file_offset
            );
        }
        for n in &interp.alloc.notes {
            println!("  note:          {n}");
        }
        match (
            interp.layout(),
            interp.runtime_vaddr,
            interp.code_type_vaddr,
        ) {
            (Some(l), Some(_), Some(_)) => println!(
                "  python stacks: yes (CPython 3.{} layout; frames walked in the kernel)",
                l.minor
            ),
            (None, _, _) => println!(
                "  python stacks: no layout for CPython {} (native stacks only)",
                interp.version
            ),
            _ => println!("  python stacks: no (_PyRuntime or PyCode_Type not exported)"),
        }
        native_frames(pid);
        match coverage_warning(&assess_coverage(&interp, 0, 0.0)) {
            Some(w) => println!("  coverage:      {w}"),
            None => println!("  coverage:      the hooked functions are the allocator's entry points (measured while recording)"),
        }
    }
    Ok(if all_ok { 0 } else { 1 })
}

/// Per module mapped as code: can the kernel's frame-pointer walk be trusted through it?
fn native_frames(pid: u32) {
    println!("  native frames: by module (the kernel walks native stacks by frame pointers)");
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
        println!("    {path}: {verdict}");
    }
}
