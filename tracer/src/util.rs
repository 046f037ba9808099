//! Small helpers: durations on the command line, timestamps, privileges, quiet output.

use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::procfs;

/// Longest duration accepted on the command line.
const MAX_DURATION: Duration = Duration::from_secs(365 * 86400);

/// A duration on the command line, read by `humantime` ("30s", "5m", "1h30m", "1h 30m", "1d",
/// "500ms"); a bare number is seconds ("2.5", "0"). Our own limits on top: not negative, at most
/// 365 days, and one-line errors.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let err =
        || format!("invalid duration '{s}': use a number with a unit, e.g. 500ms, 30s, 5m, 1h, 1d");
    let too_long = || format!("invalid duration '{s}': at most 365d");
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!(
            "invalid duration '{s}': a duration cannot be negative"
        ));
    }
    let d = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = t.parse().map_err(|_| err())?;
        if secs > MAX_DURATION.as_secs_f64() {
            return Err(too_long());
        }
        Duration::try_from_secs_f64(secs).map_err(|_| err())?
    } else {
        humantime::parse_duration(t).map_err(|e| match e {
            humantime::DurationError::NumberOverflow => too_long(),
            _ => err(),
        })?
    };
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

/// UTC "YYYYMMDD-HHMMSS" (humantime's RFC 3339 date and time, without the separators).
pub fn timestamp() -> String {
    timestamp_at(SystemTime::now())
}

fn timestamp_at(t: SystemTime) -> String {
    let rfc3339 = humantime::format_rfc3339_seconds(t).to_string();
    let (date, time) = rfc3339.split_once('T').unwrap_or((&rfc3339, ""));
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    format!("{}-{}", digits(date), digits(time))
}

/// Raises the soft limit on open descriptors to the hard one: tracer holds a descriptor per
/// probe and map, and opens /proc files of every target at every tick; running short of them
/// must not be what ends a recording.
pub fn raise_descriptor_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let _ = ORIGINAL_NOFILE.set((lim.rlim_cur, lim.rlim_max));
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

static ORIGINAL_NOFILE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// The descriptor limit before `raise_descriptor_limit`, if it raised it (for a launched
/// command, which must run as it would without tracer).
pub fn original_descriptor_limit() -> Option<libc::rlimit> {
    ORIGINAL_NOFILE.get().map(|&(cur, max)| libc::rlimit {
        rlim_cur: cur,
        rlim_max: max,
    })
}

/// Raises tracer's scheduling priority (nice -10) for the final reading and reports; returns
/// the niceness to go back to.
pub fn hurry() -> Option<i32> {
    unsafe {
        *libc::__errno_location() = 0;
        let before = libc::getpriority(libc::PRIO_PROCESS, 0);
        if *libc::__errno_location() != 0 {
            return None;
        }
        (libc::setpriority(libc::PRIO_PROCESS, 0, before.min(-10)) == 0).then_some(before)
    }
}

/// Back to the niceness `hurry` found.
pub fn unhurry(before: Option<i32>) {
    if let Some(n) = before {
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) };
    }
}

/// Root, or the capabilities tracer needs.
pub fn require_privileges() -> Result<()> {
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let caps = procfs::effective_caps();
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    const CAP_SYS_PTRACE: u32 = 19;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    if has(CAP_SYS_PTRACE) && (has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        Ok(())
    } else {
        Err(Error::NotPrivileged)
    }
}

/// Writes to stdout, ignoring a closed pipe or a full device (`tracer record ... | head`): what
/// matters is on disk already, and a reader that went away is not an error.
pub fn print_quietly(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(crate::text::clean_lines(text).as_bytes());
    let _ = out.flush();
}

/// The progress line drawn on stderr, while one is (`sink::progress` sets it): messages print
/// above it.
static PROGRESS_LINE: std::sync::Mutex<Option<indicatif::ProgressBar>> =
    std::sync::Mutex::new(None);

/// Sets (or, with None, forgets) the progress line that messages print above.
pub fn set_progress_line(bar: Option<indicatif::ProgressBar>) {
    if let Ok(mut line) = PROGRESS_LINE.lock() {
        *line = bar;
    }
}

/// Runs `write` (which writes whole lines to stderr) with the progress line out of the way:
/// indicatif clears it first and draws it again below what was written.
pub fn above_progress_line<R>(write: impl FnOnce() -> R) -> R {
    let bar = PROGRESS_LINE.lock().ok().and_then(|line| line.clone());
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// One message line on stderr, never panicking (a closed stderr, `2>&1 | head`, must not kill a
/// recording before its reports are written); whatever a target named in it is escaped
/// (`text::clean`): it is one line of plain text, printed above the progress line.
pub fn say(msg: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let text = crate::text::clean(&msg.to_string()).into_owned();
    above_progress_line(|| {
        let _ = writeln!(std::io::stderr(), "{text}");
    });
}

/// `eprintln!` through `say`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::util::say(format_args!($($arg)*))
    };
}

/// `println!` to stdout through `print_quietly`.
#[macro_export]
macro_rules! outln {
    () => {
        $crate::util::print_quietly("\n")
    };
    ($($arg:tt)*) => {
        $crate::util::print_quietly(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// "2", "2%", "0.5" -> percent in (0, 100].
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("'{s}' is not a percentage (e.g. 2 or 2%)"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("'{s}' must be between 0 and 100"))
    }
}

/// "9464" -> 127.0.0.1:9464 (loopback unless a host is given); "0.0.0.0:9464" as written.
pub fn parse_listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    // A host name with a port (`localhost:9464`): its first address, IPv4 first.
    use std::net::ToSocketAddrs as _;
    let bad = || {
        format!(
            "'{s}' is not an address to listen on (e.g. 127.0.0.1:9464, localhost:9464 or 9464)"
        )
    };
    let addrs: Vec<std::net::SocketAddr> = s.to_socket_addrs().map_err(|_| bad())?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(bad)
}

/// CLOCK_MONOTONIC in nanoseconds: the kernel programs' clock (bpf_ktime_get_ns), so that the
/// ages of what they record can be told.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen_addr("9464").unwrap().to_string(),
            "127.0.0.1:9464"
        );
        assert_eq!(
            parse_listen_addr("[::1]:80").unwrap().to_string(),
            "[::1]:80"
        );
        assert!(parse_listen_addr("nowhere").is_err());
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("2"), Ok(2.0));
        assert_eq!(parse_percent("0.5%"), Ok(0.5));
        assert_eq!(parse_percent("0"), Ok(0.0));
        assert!(parse_percent("-1").is_err());
        assert!(parse_percent("150").is_err());
        assert!(parse_percent("lots").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("365d").unwrap(), MAX_DURATION);
        assert!(parse_duration("366d").unwrap_err().contains("at most 365d"));
        assert!(parse_duration("1.5").is_ok());
        assert!(parse_duration("-5s")
            .unwrap_err()
            .contains("cannot be negative"));
        assert!(parse_duration("18446744073709551615s")
            .unwrap_err()
            .contains("at most 365d"));
        assert!(parse_duration("1e400").is_err());
        assert!(parse_duration("5s5").is_err());
    }

    #[test]
    fn timestamp_shape() {
        let t = timestamp();
        assert_eq!(t.len(), 15);
        assert_eq!(&t[8..9], "-");
        assert!(t.starts_with("20"));
        let at = |secs| timestamp_at(std::time::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "19700101-000000");
        // 2024-02-29 (a leap day) 23:59:58 UTC.
        assert_eq!(at(1_709_251_198), "20240229-235958");
    }
}
