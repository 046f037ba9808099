//! The syscalls the descriptor tracker understands, as data: for each one, what a successful call
//! does to the process's descriptors (creates one or two of some kind, closes, replaces the
//! program), where the new descriptor numbers come from and which argument says what they refer
//! to. `fds::sys_exit` looks the syscall up here and applies its description.

use tracer_common::{sys, FdKind};

/// A syscall argument, by position (0 = first).
#[derive(Clone, Copy)]
pub struct Arg(pub u8);

/// Where the numbers of the new descriptors are.
#[derive(Clone, Copy)]
pub enum Fds {
    /// The return value.
    Ret,
    /// The `int[2]` the call filled in, at the user pointer in this argument (pipe, socketpair).
    Pair(Arg),
}

/// What a new descriptor refers to beyond its kind (`FdInfo`'s `a`, `b` and `path`).
#[derive(Clone, Copy)]
pub enum Detail {
    Nothing,
    /// A NUL-terminated user string in this argument: a path, a memfd's name.
    Path(Arg),
    /// The address family and type arguments of socket/socketpair (type flags masked off).
    Socket {
        family: Arg,
        ty: Arg,
    },
    /// What the descriptor in this argument refers to, when the tracker knows it (accept: the
    /// listening socket).
    Inherit(Arg),
    /// A duplicate of the descriptor in this argument: `a` is the source, and what the source
    /// refers to is inherited when the tracker knows it.
    Dup(Arg),
}

/// When a successful call creates a descriptor.
#[derive(Clone, Copy)]
pub enum When {
    Always,
    /// This argument is -1 (signalfd: on an existing signalfd it modifies that one in place).
    MinusOne(Arg),
    /// This argument is F_DUPFD or F_DUPFD_CLOEXEC (fcntl).
    DupCommand(Arg),
    /// The returned descriptor is not the one in this argument (dup2(fd, fd) does nothing).
    NotSame(Arg),
}

/// A syscall that creates descriptors.
#[derive(Clone, Copy)]
pub struct Creates {
    pub kind: FdKind,
    pub fds: Fds,
    pub detail: Detail,
    pub when: When,
    /// The returned descriptor replaces whatever was open under that number (closed first).
    pub replaces: bool,
}

/// What a successful syscall does to the descriptor table.
#[derive(Clone, Copy)]
pub enum Effect {
    Creates(Creates),
    /// Closes the descriptor in this argument.
    Close(Arg),
    /// close_range(first, last, flags).
    CloseRange {
        first: Arg,
        last: Arg,
        flags: Arg,
    },
    /// A new program image (execve, execveat).
    Exec,
    /// A new process or thread (fork, vfork, clone, clone3): the return value is the child.
    Fork(Spawn),
    /// The heap's memory: the program break moved (brk), a mapping made or removed, memory made
    /// writable.
    Brk,
    Mmap,
    Munmap,
    Mprotect,
}

/// How a fork-like call says what it made.
#[derive(Clone, Copy)]
pub enum Spawn {
    /// fork: a process, its own copy of the memory.
    Fork,
    /// vfork: a process sharing the memory until it execs.
    Vfork,
    /// clone: the flags in the first argument.
    CloneFlags,
    /// clone3: the flags at the start of the `struct clone_args` the first argument points to.
    Clone3Args,
}

const fn creates(kind: FdKind, detail: Detail) -> Effect {
    Effect::Creates(Creates {
        kind,
        fds: Fds::Ret,
        detail,
        when: When::Always,
        replaces: false,
    })
}

const fn plain(kind: FdKind) -> Effect {
    creates(kind, Detail::Nothing)
}

const fn dup(when: When) -> Effect {
    Effect::Creates(Creates {
        kind: FdKind::Dup,
        fds: Fds::Ret,
        detail: Detail::Dup(Arg(0)),
        when,
        replaces: true,
    })
}

/// The description of syscall `nr`, `None` for a syscall that does not touch descriptors.
#[inline(always)]
pub fn effect(nr: u32) -> Option<Effect> {
    use FdKind::*;
    Some(match nr {
        sys::CLOSE => Effect::Close(Arg(0)),
        sys::CLOSE_RANGE => Effect::CloseRange {
            first: Arg(0),
            last: Arg(1),
            flags: Arg(2),
        },
        sys::EXECVE | sys::EXECVEAT => Effect::Exec,
        sys::FORK => Effect::Fork(Spawn::Fork),
        sys::BRK => Effect::Brk,
        sys::MMAP => Effect::Mmap,
        sys::MUNMAP => Effect::Munmap,
        sys::MPROTECT => Effect::Mprotect,
        sys::VFORK => Effect::Fork(Spawn::Vfork),
        sys::CLONE => Effect::Fork(Spawn::CloneFlags),
        sys::CLONE3 => Effect::Fork(Spawn::Clone3Args),
        sys::OPEN | sys::CREAT => creates(File, Detail::Path(Arg(0))),
        sys::OPENAT | sys::OPENAT2 => creates(File, Detail::Path(Arg(1))),
        sys::OPEN_BY_HANDLE_AT => plain(File),
        sys::SOCKET => creates(
            Socket,
            Detail::Socket {
                family: Arg(0),
                ty: Arg(1),
            },
        ),
        // Same family and type as the listening socket.
        sys::ACCEPT | sys::ACCEPT4 => creates(Socket, Detail::Inherit(Arg(0))),
        sys::SOCKETPAIR => Effect::Creates(Creates {
            kind: Socket,
            fds: Fds::Pair(Arg(3)),
            detail: Detail::Socket {
                family: Arg(0),
                ty: Arg(1),
            },
            when: When::Always,
            replaces: false,
        }),
        sys::PIPE | sys::PIPE2 => Effect::Creates(Creates {
            kind: Pipe,
            fds: Fds::Pair(Arg(0)),
            detail: Detail::Nothing,
            when: When::Always,
            replaces: false,
        }),
        sys::DUP => dup(When::Always),
        sys::DUP2 | sys::DUP3 => dup(When::NotSame(Arg(0))),
        sys::FCNTL => Effect::Creates(Creates {
            kind: Dup,
            fds: Fds::Ret,
            detail: Detail::Dup(Arg(0)),
            when: When::DupCommand(Arg(1)),
            replaces: false,
        }),
        sys::EVENTFD | sys::EVENTFD2 => plain(Eventfd),
        sys::EPOLL_CREATE | sys::EPOLL_CREATE1 => plain(Epoll),
        sys::MEMFD_CREATE => creates(Memfd, Detail::Path(Arg(0))),
        sys::MEMFD_SECRET => plain(Memfd),
        sys::SIGNALFD | sys::SIGNALFD4 => Effect::Creates(Creates {
            kind: Signalfd,
            fds: Fds::Ret,
            detail: Detail::Nothing,
            when: When::MinusOne(Arg(0)),
            replaces: false,
        }),
        sys::TIMERFD_CREATE => plain(Timerfd),
        sys::INOTIFY_INIT | sys::INOTIFY_INIT1 => plain(Inotify),
        sys::FANOTIFY_INIT => plain(Fanotify),
        sys::PIDFD_OPEN | sys::PIDFD_GETFD => plain(Pidfd),
        sys::USERFAULTFD => plain(Userfaultfd),
        sys::PERF_EVENT_OPEN => plain(PerfEvent),
        sys::IO_URING_SETUP => plain(IoUring),
        _ => return None,
    })
}
