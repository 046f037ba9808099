//! The signals that end a recording. SIGINT and SIGTERM are awaited in the collect loop
//! (tokio), and caught before it like the others: a Ctrl-C right after "recording" (before the
//! loop's handlers exist) writes the reports too. The others whose default action ends a process
//! (SIGHUP when a terminal or an SSH session closes, SIGQUIT, SIGUSR1/2, SIGALRM...) are caught
//! from the very start by a handler
//! that only records which one came: the collect loop looks at every turn (at least every
//! 100 ms), stops, and writes the reports as for Ctrl-C. A launched command gets its default
//! handlers back at its exec.

use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// Signals whose default action would end tracer without its reports (besides SIGPIPE, which
/// Rust ignores).
fn ending_signals() -> Vec<libc::c_int> {
    let mut v = vec![
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGPWR,
        libc::SIGIO,
        libc::SIGSTKFLT,
    ];
    v.extend(libc::SIGRTMIN()..=libc::SIGRTMAX());
    v
}

/// Installs the handler (once, at start).
pub fn catch_ending_signals() {
    for sig in ending_signals() {
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The ending signal received, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// "SIGHUP" for a message (with why it may have come).
pub fn describe(sig: i32) -> String {
    let name = match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP (the terminal or session closed?)",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGALRM => "SIGALRM",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGXCPU => "SIGXCPU (CPU time limit)",
        libc::SIGXFSZ => "SIGXFSZ (file size limit)",
        libc::SIGPWR => "SIGPWR",
        libc::SIGIO => "SIGIO",
        libc::SIGSTKFLT => "SIGSTKFLT",
        s if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&s) => {
            return format!("SIGRTMIN+{}", s - libc::SIGRTMIN())
        }
        s => return format!("signal {s}"),
    };
    name.to_string()
}
