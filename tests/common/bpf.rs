//! The BPF programs and links the kernel and a tracer hold (bpftool, /proc/PID/fdinfo).

use std::process::Command;

/// Names of the BPF programs loaded in the kernel right now.
pub fn loaded_bpf_programs() -> Vec<String> {
    let out = Command::new("bpftool").args(["prog", "show"]).output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                l.split(" name ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .map(str::to_string)
            })
            .collect(),
        _ => panic!("bpftool is needed by the tests (cargo xtask setup installs it)"),
    }
}

/// Ids of the BPF programs a process holds (its /proc/PID/fdinfo): what a tracer loaded, told
/// apart from the programs of other tracers running at the same time.
pub fn bpf_program_ids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("prog_id:"))
                        .and_then(|v| v.trim().parse().ok())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A process's perf-event links (/proc/PID/fdinfo): (uprobe links, links of its perf-event
/// programs: the on-CPU stack sampler's, one per CPU).
pub fn perf_links(pid: u32) -> (usize, usize) {
    let infos: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    let field = |s: &str, name: &str| -> Option<String> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    // BPF_PROG_TYPE_PERF_EVENT
    let sampler: Vec<String> = infos
        .iter()
        .filter(|s| field(s, "prog_type:").as_deref() == Some("7"))
        .filter_map(|s| field(s, "prog_id:"))
        .collect();
    let links: Vec<Option<String>> = infos
        .iter()
        .filter(|s| field(s, "link_type:").as_deref() == Some("perf"))
        .map(|s| field(s, "prog_id:"))
        .collect();
    let of_sampler = links
        .iter()
        .filter(|id| id.as_ref().is_some_and(|id| sampler.contains(id)))
        .count();
    (links.len() - of_sampler, of_sampler)
}

/// A process's uprobe links (its perf-event links but the on-CPU sampler's).
pub fn uprobe_links(pid: u32) -> usize {
    perf_links(pid).0
}

/// Ids of every BPF program loaded in the kernel now.
pub fn loaded_bpf_program_ids() -> Vec<u32> {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .expect("bpftool is needed by the tests (cargo xtask setup installs it)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').next()?.trim().parse().ok())
        .collect()
}
