//! Launch mode: start a command stopped at each exec (ptrace, which only stops and resumes: it
//! never writes the target), find the exec that runs a CPython interpreter, let the caller attach
//! its probes while the process is still stopped, then detach. The script's first line runs
//! after the probes are in place. Wrappers (pyenv shims, shell scripts) exec'ing python work too.

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command};

use crate::error::{Error, Result};
use crate::python::{self, Interpreter};

pub struct Launched {
    pub pid: u32,
    pub interp: Interpreter,
    pub child: Child,
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Spawns `cmd` and returns once it has exec'd a CPython interpreter, still stopped.
pub fn start(cmd: &[String]) -> Result<Launched> {
    let shown = cmd.join(" ");
    let launch_err = |reason: String| Error::Launch {
        cmd: shown.clone(),
        reason,
    };
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    unsafe {
        c.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().map_err(|e| launch_err(e.to_string()))?;
    let pid = child.id() as libc::pid_t;
    let mut first = true;
    loop {
        let mut status = 0;
        if unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } < 0 {
            return Err(launch_err(os_err("waitpid")));
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            let _ = child.wait();
            return Err(launch_err(
                "it exited without running a CPython interpreter".into(),
            ));
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        let is_exec = sig == libc::SIGTRAP && (first || event == libc::PTRACE_EVENT_EXEC);
        if !is_exec {
            // Deliver any other signal unchanged.
            let deliver = if sig == libc::SIGTRAP { 0 } else { sig };
            unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, deliver as libc::c_long) };
            continue;
        }
        if first {
            first = false;
            unsafe {
                libc::ptrace(
                    libc::PTRACE_SETOPTIONS,
                    pid,
                    0,
                    libc::PTRACE_O_TRACEEXEC as libc::c_long,
                )
            };
        }
        if let Some(interp) = inspect_exec(pid as u32)? {
            return Ok(Launched {
                pid: pid as u32,
                interp,
                child,
            });
        }
        unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, 0) };
    }
}

/// The interpreter the freshly exec'd program will run, if it is CPython.
fn inspect_exec(pid: u32) -> Result<Option<Interpreter>> {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return Ok(None);
    };
    let llp = std::fs::read(format!("/proc/{pid}/environ"))
        .ok()
        .and_then(|env| {
            env.split(|&b| b == 0).find_map(|kv| {
                kv.strip_prefix(b"LD_LIBRARY_PATH=")
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        });
    let Some(file) = python::interpreter_file_of_executable(&exe, llp.as_deref()) else {
        return Ok(None);
    };
    let path = file.to_string_lossy().into_owned();
    python::inspect_file(&path, &file)
}

/// Lets the stopped process run, untraced by ptrace from now on.
pub fn resume(l: &Launched) {
    unsafe { libc::ptrace(libc::PTRACE_DETACH, l.pid as libc::pid_t, 0, 0) };
}

/// Ends a launched command that is still running: SIGTERM, then SIGKILL after a grace period.
pub fn terminate(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id() as libc::pid_t;
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for _ in 0..30 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}
