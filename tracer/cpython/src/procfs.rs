//! Reading /proc: process maps, state, CPU time, descriptors, and target memory (read-only).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub inode: u64,
    pub path: Option<String>,
}

/// Parses the text of /proc/PID/maps.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(off), Some(_dev), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let Some((s, e)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset), Ok(inode)) = (
            u64::from_str_radix(s, 16),
            u64::from_str_radix(e, 16),
            u64::from_str_radix(off, 16),
            inode.parse::<u64>(),
        ) else {
            continue;
        };
        // The path is the rest of the line (it may contain spaces).
        let path = line
            .splitn(6, |c: char| c.is_ascii_whitespace())
            .nth(5)
            .map(|p| p.trim_start().to_string())
            .filter(|p| !p.is_empty());
        out.push(MapEntry {
            start,
            end,
            perms: perms.to_string(),
            offset,
            inode,
            path,
        });
    }
    keep_latest_views(&mut out, |m| (m.start, m.end));
    out
}

/// The kernel writes /proc/PID/maps and smaps a page of text at a time, and the process may
/// change its mappings between two pages: a mapping that changed then is listed twice, as it
/// was and as it is (the brk heap of a process that allocates, most often; the kernel's own
/// tests allow it). The listing is in address order, so the earlier view is an entry that a
/// later one overlaps: those are dropped, and each range is counted once, as it is now.
pub fn keep_latest_views<T>(entries: &mut Vec<T>, range: impl Fn(&T) -> (u64, u64)) {
    let mut kept: Vec<T> = Vec::with_capacity(entries.len());
    for e in entries.drain(..) {
        let (start, end) = range(&e);
        while kept.last().is_some_and(|k| {
            let (s, e) = range(k);
            s < end && e > start
        }) {
            kept.pop();
        }
        kept.push(e);
    }
    *entries = kept;
}

pub fn maps(pid: u32) -> io::Result<Vec<MapEntry>> {
    Ok(parse_maps(&fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

pub fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The container a process runs in, from its cgroup path: the 64-hex id that docker,
/// containerd (cri), cri-o and podman put in it (`docker-<id>.scope`, `cri-containerd-<id>`,
/// `crio-<id>`, `libpod-<id>`, `/docker/<id>`), shortened to 12 characters. None on the host.
pub fn container_of_cgroup(text: &str) -> Option<String> {
    for line in text.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        for part in path.split('/').rev() {
            let part = part.trim_end_matches(".scope");
            let id = part.rsplit(['-', ':']).next().unwrap_or(part);
            if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Some(id[..12].to_string());
            }
        }
    }
    None
}

pub fn container(pid: u32) -> Option<String> {
    container_of_cgroup(&fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?)
}

/// The pid of a process inside its own pid namespace (the last `NSpid:` entry of its status),
/// when it runs in another namespace than the host's.
pub fn nspid_of_status(text: &str) -> Option<u32> {
    let ids: Vec<u32> = text
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_ascii_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    (ids.len() > 1).then(|| *ids.last().unwrap())
}

/// The process a thread id belongs to (its `Tgid:`): a pid names itself.
pub fn tgid(pid: u32) -> Option<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

pub fn nspid(pid: u32) -> Option<u32> {
    nspid_of_status(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub state: char,
    pub ppid: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub start_ticks: u64,
}

/// Parses /proc/PID/stat (the comm field may contain spaces and parentheses).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // f[0] is field 3 (state); utime is field 14, stime 15, starttime 22.
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        cpu_ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Whether a process we trace still runs, decided from the process alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// Gone, a zombie, or its pid now another process (its start time differs).
    Gone,
    /// tracer could not look (out of descriptors or memory, say): our own trouble, not the
    /// target's, and never taken for an exit.
    Unknown,
}

/// The liveness of `pid`, started at `start_ticks`.
pub fn liveness(pid: u32, start_ticks: u64) -> Liveness {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => match parse_stat(&text) {
            Some(s) if matches!(s.state, 'Z' | 'X') || s.start_ticks != start_ticks => {
                Liveness::Gone
            }
            Some(_) => Liveness::Alive,
            None => Liveness::Gone,
        },
        Err(e) if gone_error(&e) => Liveness::Gone,
        Err(_) => Liveness::Unknown,
    }
}

/// An error of /proc that says the process is gone (and not that tracer is short of something).
pub fn gone_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH))
}

pub fn clock_ticks_per_sec() -> u64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Where each open descriptor of a process points (readlink of /proc/PID/fd/N).
pub fn fd_targets(pid: u32) -> io::Result<HashMap<u32, String>> {
    let mut out = HashMap::new();
    for e in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let e = e?;
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(t) = fs::read_link(e.path()) {
            out.insert(fd, t.to_string_lossy().into_owned());
        }
    }
    Ok(out)
}

/// A path as the process sees it, opened from the host through /proc/PID/root.
pub fn path_in_root(pid: u32, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root{path}"))
}

/// Reads target memory with process_vm_readv. Never writes.
pub fn read_mem(pid: u32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    read_mem_many(pid, &[(addr, len)])
}

/// Resident memory of a process, in bytes (/proc/PID/statm).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

/// Reads several ranges of target memory in one process_vm_readv (one near-instant copy: a
/// consistent view of memory that changes while it is read piece by piece), concatenated.
pub fn read_mem_many(pid: u32, parts: &[(u64, usize)]) -> io::Result<Vec<u8>> {
    let total: usize = parts.iter().map(|p| p.1).sum();
    let mut buf = vec![0u8; total];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: total,
    };
    let remote: Vec<libc::iovec> = parts
        .iter()
        .map(|&(addr, len)| libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    if remote.len() > 1024 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many ranges",
        ));
    }
    let n = unsafe {
        libc::process_vm_readv(
            pid as libc::pid_t,
            &local,
            1,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != total {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "short read of target memory",
        ));
    }
    Ok(buf)
}

/// Effective capabilities of this process (CapEff from /proc/self/status).
pub fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_from_cgroups() {
        let id = "4f1e2d3c4b5a69788796a5b4c3d2e1f0a1b2c3d4e5f60718293a4b5c6d7e8f90";
        let short = Some(id[..12].to_string());
        for text in [
            format!("0::/system.slice/docker-{id}.scope\n"),
            format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope\n"),
            format!("0::/machine.slice/libpod-{id}.scope/container\n"),
            format!("12:memory:/docker/{id}\n"),
            format!("0::/kubepods/besteffort/pod1/crio-{id}\n"),
        ] {
            assert_eq!(container_of_cgroup(&text), short, "{text}");
        }
        assert_eq!(
            container_of_cgroup("0::/user.slice/user-0.slice/session-3.scope\n"),
            None
        );
    }

    #[test]
    fn maps_lines() {
        let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 1234   /usr/bin/python3.11
7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0 
7f1c2b000000-7f1c2b400000 r-xp 0001c000 fe:01 998877 /opt/my lib/libpython3.11.so.1.0
7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]
garbage line
";
        let m = parse_maps(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].start, 0x55d0c0a00000);
        assert_eq!(m[0].path.as_deref(), Some("/usr/bin/python3.11"));
        assert_eq!(m[1].path, None);
        assert_eq!(m[2].offset, 0x1c000);
        assert_eq!(m[2].inode, 998877);
        assert_eq!(m[2].perms, "r-xp");
        assert_eq!(
            m[2].path.as_deref(),
            Some("/opt/my lib/libpython3.11.so.1.0")
        );
        assert_eq!(m[3].path.as_deref(), Some("[stack]"));
    }

    /// The brk heap listed twice (it grew between two pages of the listing): once, as it is now.
    #[test]
    fn a_mapping_listed_twice_is_kept_once() {
        let text = "\
55ebe60f7000-55ebf176c000 rw-p 00000000 00:00 0                          [heap]
55ebe60f7000-55ebf179c000 rw-p 00000000 00:00 0                          [heap]
7f1c2a000000-7f1c2a021000 rw-p 00000000 00:00 0 
7f1c29f00000-7f1c2a010000 rw-p 00000000 00:00 0 
7f1c2b000000-7f1c2b400000 r-xp 0001c000 fe:01 998877 /usr/lib/libpython3.11.so.1.0
";
        let m = parse_maps(text);
        let ranges: Vec<(u64, u64)> = m.iter().map(|e| (e.start, e.end)).collect();
        assert_eq!(
            ranges,
            [
                (0x55ebe60f7000, 0x55ebf179c000),
                (0x7f1c29f00000, 0x7f1c2a010000),
                (0x7f1c2b000000, 0x7f1c2b400000)
            ]
        );
    }

    #[test]
    fn stat_with_odd_comm() {
        let s = "1234 (py (x) 3) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 777 0 0";
        let st = parse_stat(s).unwrap();
        assert_eq!(st.state, 'S');
        assert_eq!(st.cpu_ticks, 300);
        assert_eq!(st.start_ticks, 777);
        assert!(parse_stat("nonsense").is_none());
    }
}
