//! Launch mode: start a command under ptrace (which only stops and resumes: it never writes the
//! target) and follow its process tree to the CPython interpreters it runs. Forked children are
//! traced too (PTRACE_O_TRACEFORK/TRACEVFORK), every exec in the tree is stopped and inspected
//! (PTRACE_O_TRACEEXEC); an exec of CPython is handed to the collector, still stopped, so that its
//! probes are in place before the script's first line, then detached and resumed. Wrappers that
//! exec python (pyenv shims) and wrappers that fork it (`sh -c "python a.py; python b.py"`) both
//! work; every Python process the tree starts this way is traced.
//!
//! ptrace requests must come from the thread that is the tracer: a dedicated launcher thread
//! spawns the command and runs the ptrace loop; it talks to the collect loop through channels, so
//! that the loop keeps serving signals and `-d` while the tree has not started Python yet.

use std::collections::HashSet;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::python::{self, Interpreter};

/// What the launcher thread tells the collect loop.
pub enum LaunchEvent {
    /// A process of the tree exec'd a CPython interpreter. It stays stopped (`in_exec`: inside
    /// the exec call, which the kernel counts when it returns) until `resume` is answered or
    /// dropped.
    Python {
        pid: u32,
        interp: Box<Interpreter>,
        in_exec: bool,
        resume: mpsc::Sender<()>,
    },
    /// A process of the tree runs a Python that cannot be traced (an unsupported version); it
    /// runs on untraced.
    Failed { pid: u32, err: Error },
    /// The launched command has exited, and so has every process of its tree still followed.
    Done,
}

/// The launched command's process tree, followed by the launcher thread.
pub struct Launcher {
    /// The command as shown in messages.
    pub shown: String,
    pub events: tokio::sync::mpsc::UnboundedReceiver<LaunchEvent>,
    /// `Done` was received.
    pub done: bool,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn ptrace(req: libc::c_uint, pid: i32, data: usize) -> libc::c_long {
    unsafe { libc::ptrace(req, pid, 0usize, data) }
}

/// Spawns `cmd` under ptrace from a launcher thread, which follows its tree from then on.
pub fn start(cmd: &[String]) -> Result<Launcher> {
    let shown = cmd.join(" ");
    let (spawned_tx, spawned_rx) = mpsc::channel::<Result<u32>>();
    let (ev_tx, ev_rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let cmd = cmd.to_vec();
    let shown2 = shown.clone();
    let thread = std::thread::Builder::new()
        .name("launcher".into())
        .spawn(move || {
            let root = match spawn(&cmd, &shown2) {
                Ok(pid) => pid,
                Err(e) => {
                    let _ = spawned_tx.send(Err(e));
                    return;
                }
            };
            let _ = spawned_tx.send(Ok(root));
            Tree::new(root).run(&ev_tx, &stop_rx);
        })
        .map_err(|e| Error::Other(format!("cannot start the launcher thread: {e}")))?;
    match spawned_rx.recv() {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            let _ = thread.join();
            return Err(Error::Launch {
                cmd: shown,
                reason: "the launcher thread died".into(),
            });
        }
    }
    Ok(Launcher {
        shown,
        events: ev_rx,
        done: false,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// Starts the command, stopped at its first exec (PTRACE_TRACEME). Must run on the thread that
/// will trace it.
fn spawn(cmd: &[String], shown: &str) -> Result<u32> {
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..]);
    let soft = crate::util::original_descriptor_limit();
    unsafe {
        c.pre_exec(move || {
            // The command gets the descriptor limit tracer was given, not the one it raised.
            if let Some(lim) = soft {
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = c.spawn().map_err(|e| Error::Launch {
        cmd: shown.to_string(),
        reason: if e.raw_os_error() == Some(libc::EPERM) {
            "it cannot be traced with ptrace (is tracer itself running under strace or gdb, or does kernel.yama.ptrace_scope forbid it?): start it yourself and attach with -p PID".into()
        } else {
            e.to_string()
        },
    })?;
    // Reaped by the ptrace loop (waitpid), not through `Child`.
    Ok(child.id())
}

/// The ptrace side of the launch: the processes of the tree being followed.
struct Tree {
    root: u32,
    root_exited: bool,
    /// Processes traced with ptrace (Python ones are detached once handed over).
    traced: HashSet<u32>,
    /// Forked children announced by their parent's fork event, their first stop (the kernel's
    /// SIGSTOP on auto-attach) not seen yet.
    fresh: HashSet<u32>,
    /// The root has not stopped yet: its first stop is the exec of the command.
    first: bool,
}

impl Tree {
    fn new(root: u32) -> Tree {
        Tree {
            root,
            root_exited: false,
            traced: [root].into_iter().collect(),
            fresh: HashSet::new(),
            first: true,
        }
    }

    /// Serves every ptrace stop of the tree until the root and every traced process have exited
    /// (then sends `Done`), or until asked to stop (then ends the root: SIGTERM, SIGKILL after
    /// a grace period). Processes still traced when the thread returns are detached by the
    /// kernel.
    fn run(
        &mut self,
        events: &tokio::sync::mpsc::UnboundedSender<LaunchEvent>,
        stop: &mpsc::Receiver<()>,
    ) {
        let mut stopping: Option<Instant> = None;
        let mut killed = false;
        loop {
            if stopping.is_none()
                && matches!(
                    stop.try_recv(),
                    Ok(()) | Err(mpsc::TryRecvError::Disconnected)
                )
            {
                if self.root_exited {
                    return;
                }
                unsafe { libc::kill(self.root as i32, libc::SIGTERM) };
                stopping = Some(Instant::now());
            }
            if let Some(since) = stopping {
                if !killed && since.elapsed() > Duration::from_secs(3) {
                    unsafe { libc::kill(self.root as i32, libc::SIGKILL) };
                    killed = true;
                }
                if self.root_exited || since.elapsed() > Duration::from_secs(6) {
                    return;
                }
            }
            let mut status = 0;
            let w = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::WNOHANG) };
            if w <= 0 {
                if w < 0 {
                    // ECHILD: nothing left to wait for.
                    self.root_exited = true;
                    self.traced.clear();
                }
                if self.root_exited && self.traced.is_empty() && stopping.is_none() {
                    let _ = events.send(LaunchEvent::Done);
                    // Wait for the stop request (nothing to trace any more).
                    let _ = stop.recv();
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            self.on_wait(w as u32, status, events);
        }
    }

    fn on_wait(
        &mut self,
        pid: u32,
        status: i32,
        events: &tokio::sync::mpsc::UnboundedSender<LaunchEvent>,
    ) {
        let p = pid as i32;
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            self.traced.remove(&pid);
            self.fresh.remove(&pid);
            if pid == self.root {
                self.root_exited = true;
            }
            return;
        }
        if !libc::WIFSTOPPED(status) {
            return;
        }
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xff;
        // A forked child, attached by the kernel: its first stop is a SIGSTOP of the kernel's
        // (seen before or after the parent's fork event), not to be delivered.
        let new = self.traced.insert(pid) | self.fresh.remove(&pid);
        if new && sig == libc::SIGSTOP && event == 0 {
            ptrace(libc::PTRACE_CONT, p, 0);
            return;
        }
        let legacy_exec = pid == self.root && self.first && sig == libc::SIGTRAP;
        if legacy_exec {
            self.first = false;
            let opts =
                libc::PTRACE_O_TRACEEXEC | libc::PTRACE_O_TRACEFORK | libc::PTRACE_O_TRACEVFORK;
            ptrace(libc::PTRACE_SETOPTIONS, p, opts as usize);
        }
        if legacy_exec || (sig == libc::SIGTRAP && event == libc::PTRACE_EVENT_EXEC) {
            self.on_exec(pid, !legacy_exec, events);
            return;
        }
        if sig == libc::SIGTRAP
            && (event == libc::PTRACE_EVENT_FORK || event == libc::PTRACE_EVENT_VFORK)
        {
            let mut child: libc::c_ulong = 0;
            ptrace(
                libc::PTRACE_GETEVENTMSG,
                p,
                &mut child as *mut libc::c_ulong as usize,
            );
            if child != 0 && self.traced.insert(child as u32) {
                self.fresh.insert(child as u32);
            }
            ptrace(libc::PTRACE_CONT, p, 0);
            return;
        }
        // Deliver any other signal unchanged.
        let deliver = if sig == libc::SIGTRAP { 0 } else { sig };
        ptrace(libc::PTRACE_CONT, p, deliver as usize);
    }

    /// A process of the tree, stopped at an exec: a CPython program is handed over (and
    /// detached once its probes are attached), anything else runs on, still followed.
    fn on_exec(
        &mut self,
        pid: u32,
        in_exec: bool,
        events: &tokio::sync::mpsc::UnboundedSender<LaunchEvent>,
    ) {
        let p = pid as i32;
        match inspect_exec(pid) {
            Ok(Some(interp)) => {
                let (tx, rx) = mpsc::channel();
                let sent = events.send(LaunchEvent::Python {
                    pid,
                    interp: Box::new(interp),
                    in_exec,
                    resume: tx,
                });
                if sent.is_ok() {
                    // Answered (or dropped) once the probes are attached.
                    let _ = rx.recv();
                }
                ptrace(libc::PTRACE_DETACH, p, 0);
                self.traced.remove(&pid);
                self.fresh.remove(&pid);
            }
            Ok(None) => {
                ptrace(libc::PTRACE_CONT, p, 0);
            }
            Err(err) => {
                let _ = events.send(LaunchEvent::Failed { pid, err });
                ptrace(libc::PTRACE_DETACH, p, 0);
                self.traced.remove(&pid);
            }
        }
    }
}

impl Launcher {
    /// Ends the launched command if it still runs (SIGTERM, SIGKILL after a grace period) and
    /// lets the rest of its tree go (detached).
    pub fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        self.stop();
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
    Ok(python::inspect_file(&path, &file)?)
}

/// Ends processes of the launched tree that still run (the Python processes it started, which
/// are not the tracer's children): SIGTERM, then SIGKILL after a grace period. Each is named by
/// pid and start time (a reused pid is left alone).
pub fn terminate(procs: &[(u32, u64)]) {
    let same = |&(pid, start): &(u32, u64)| {
        crate::procfs::stat(pid)
            .is_some_and(|s| s.start_ticks == start && !matches!(s.state, 'Z' | 'X'))
    };
    let live: Vec<(u32, u64)> = procs.iter().copied().filter(same).collect();
    if live.is_empty() {
        return;
    }
    for (pid, _) in &live {
        unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
    }
    for _ in 0..30 {
        if !live.iter().any(same) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for p in live.iter().filter(|p| same(p)) {
        unsafe { libc::kill(p.0 as i32, libc::SIGKILL) };
    }
}
