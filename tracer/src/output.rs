//! The output directory, written safely: tracer runs as root, often in directories other users can
//! write, so it never follows a link it did not make and never writes a file in place.
//!
//! - The directory is created exclusively (a fresh `tracer-YYYYMMDD-HHMMSS[-N]`, mode 0700), or an
//!   existing `-o DIR` is taken only when it is empty (with `--force`: tracer's own reports in it
//!   are removed first, other files are left alone), never when DIR itself is a link, and never
//!   when another user can write it (they could read and replace root's reports).
//! - Everything is written through the directory's file descriptor (`openat`, `O_NOFOLLOW`,
//!   `O_EXCL` on a temporary name), then renamed over the final name: a link planted under a
//!   report's name is replaced, not followed, and a reader never sees half a file.
//! - A set of reports is written whole or not at all: every temporary file is written first (a
//!   full disk fails there), then they are all renamed. The directory keeps the last complete set.
//!   When the disk is full, `--snapshots`' oldest sets make room first; when no set fits yet,
//!   the files that fit are written one by one, the summary first.

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, CWD};

use crate::error::{Error, Result};

/// Names tracer writes in an output directory (and `--force` may remove).
const OUR_FILES: [&str; 12] = [
    "allocs.folded",
    "allocs-count.folded",
    "fds.folded",
    "growth.folded",
    "allocs.svg",
    "fds.svg",
    "growth.svg",
    "report.json",
    "profile.pb.gz",
    "speedscope.json",
    "summary.txt",
    ".tracer-write-test",
];
const SNAPSHOTS: &str = "snapshots";
/// Temporary names start with this (left only by a tracer that was killed mid-write).
const TMP_PREFIX: &str = ".tracer-tmp-";

/// An output directory held open: every write goes through this descriptor.
pub struct OutputDir {
    path: PathBuf,
    fd: OwnedFd,
    /// tracer made it (it may be removed again if the recording never starts).
    created: bool,
}

/// A set that could not be written: the error for the user, and whether the disk (or the
/// quota) was full, which room made elsewhere may cure.
#[derive(Debug)]
pub struct WriteError {
    pub error: Error,
    pub full: bool,
}

impl From<WriteError> for Error {
    fn from(e: WriteError) -> Error {
        e.error
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl OutputDir {
    /// The directory for a recording: `requested` (`-o`), or a fresh default name.
    pub fn prepare(requested: Option<&Path>, force: bool) -> Result<OutputDir> {
        let dir = match requested {
            None => Self::create_fresh(&format!("tracer-{}", crate::util::timestamp()))?,
            Some(p) => Self::take(p, force)?,
        };
        // Writable, as root may still be refused (a read-only mount).
        dir.write_set(&[(".tracer-write-test".to_string(), Vec::new())])
            .map_err(|e| e.error)?;
        let _ = rfs::unlinkat(&dir.fd, ".tracer-write-test", AtFlags::empty());
        Ok(dir)
    }

    /// The path given or made at the start.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the directory is now (renamed or moved during the recording: its new path; as
    /// the kernel names it through tracer's descriptor), for messages and the summary.
    pub fn current_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd as _;
        match std::fs::read_link(format!("/proc/self/fd/{}", self.fd.as_raw_fd())) {
            Ok(p) if !p.to_string_lossy().ends_with(" (deleted)") => p,
            _ => self.path.clone(),
        }
    }

    fn fail(path: &Path, reason: impl std::fmt::Display) -> Error {
        Error::Output {
            dir: path.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// Creates `base` (or `base-2`, `base-3`... when taken) exclusively, mode 0700.
    fn create_fresh(base: &str) -> Result<OutputDir> {
        for n in 1..1000 {
            let name = if n == 1 {
                base.to_string()
            } else {
                format!("{base}-{n}")
            };
            match rfs::mkdirat(CWD, name.as_str(), Mode::from_raw_mode(0o700)) {
                Ok(()) => return Self::open(Path::new(&name), true),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(Self::fail(Path::new(&name), e)),
            }
        }
        Err(Self::fail(Path::new(base), "every name is taken"))
    }

    /// Opens a directory without following a link at its last component.
    fn open(path: &Path, created: bool) -> Result<OutputDir> {
        let fd = rfs::openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => Self::fail(
                path,
                "it is a symbolic link or not a directory (tracer never writes through a link)",
            ),
            e => Self::fail(path, e),
        })?;
        Ok(OutputDir {
            path: path.to_path_buf(),
            fd,
            created,
        })
    }

    /// `-o DIR`: created when missing (its parents too), else taken when it is a real, empty
    /// directory (or, with `force`, after removing tracer's own reports from it).
    fn take(path: &Path, force: bool) -> Result<OutputDir> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| Self::fail(path, e))?;
                }
                match rfs::mkdirat(CWD, path, Mode::from_raw_mode(0o700)) {
                    Ok(()) => Self::open(path, true),
                    // Made by someone else meanwhile: take it like any existing directory.
                    Err(rustix::io::Errno::EXIST) => Self::take_existing(path, force),
                    Err(e) => Err(Self::fail(path, e)),
                }
            }
            Err(e) => Err(Self::fail(path, e)),
            Ok(md) if md.file_type().is_symlink() => Err(Self::fail(
                path,
                "it is a symbolic link (tracer never writes through a link): give the directory itself",
            )),
            Ok(md) if !md.is_dir() => Err(Self::fail(path, "it is not a directory")),
            Ok(_) => Self::take_existing(path, force),
        }
    }

    fn take_existing(path: &Path, force: bool) -> Result<OutputDir> {
        let dir = Self::open(path, false)?;
        let st = rfs::fstat(&dir.fd).map_err(|e| Self::fail(path, e))?;
        let me = unsafe { libc::geteuid() };
        let others = st.st_mode & 0o002 != 0 || (st.st_mode & 0o020 != 0 && st.st_gid != 0);
        if st.st_uid != me || others {
            let who = if st.st_uid != me {
                format!("it belongs to another user (uid {}), who", st.st_uid)
            } else {
                "other users can write it, and they".to_string()
            };
            return Err(Self::fail(
                path,
                format!(
                    "{who} could read and replace root's reports (mode {:04o}); give a directory only you can write, or a path that does not exist yet (tracer creates it, mode 0700)",
                    st.st_mode & 0o7777
                ),
            ));
        }
        let entries = dir.entries()?;
        if entries.is_empty() {
            return Ok(dir);
        }
        if !force {
            return Err(Error::BadArgument(format!(
                "the output directory {} is not empty: choose a new one, or add --force to replace tracer's reports in it (other files are left alone)",
                path.display()
            )));
        }
        for name in entries {
            let n = name.to_string_lossy();
            if n == SNAPSHOTS {
                remove_our_snapshots(&dir.fd).map_err(|e| Self::fail(path, e))?;
            } else if OUR_FILES.contains(&n.as_ref()) || n.starts_with(TMP_PREFIX) {
                // unlinkat removes a link itself, never what it points to.
                rfs::unlinkat(&dir.fd, name.as_os_str(), AtFlags::empty())
                    .map_err(|e| Self::fail(path, e))?;
            }
        }
        Ok(dir)
    }

    /// The names in the directory (not `.` and `..`).
    fn entries(&self) -> Result<Vec<std::ffi::OsString>> {
        entries_of(&self.fd).map_err(|e| Self::fail(&self.path, e))
    }

    /// Is the directory still there (not removed while tracer held it)?
    pub fn removed(&self) -> bool {
        rfs::fstat(&self.fd).is_ok_and(|st| st.st_nlink == 0)
    }

    /// Writes a set of files (name, bytes): all to temporary names first, then each renamed over
    /// its name. On failure nothing of this set is left and the previous set stays whole.
    pub fn write_set(&self, files: &[(String, Vec<u8>)]) -> Result<(), WriteError> {
        let mut written: Vec<(String, &str)> = Vec::new();
        let cleanup = |written: &[(String, &str)]| {
            for (tmp, _) in written {
                let _ = rfs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            }
        };
        for (name, bytes) in files {
            match self.write_tmp(name, bytes) {
                Ok(tmp) => written.push((tmp, name.as_str())),
                Err(e) => {
                    cleanup(&written);
                    return Err(self.write_error(e));
                }
            }
        }
        for (i, (tmp, name)) in written.iter().enumerate() {
            if let Err(e) = rfs::renameat(&self.fd, tmp.as_str(), &self.fd, *name) {
                cleanup(&written[i..]);
                return Err(self.write_error(e.into()));
            }
        }
        Ok(())
    }

    /// Writes `bytes` under a fresh temporary name (created exclusively: a name someone took
    /// is skipped, never opened) and returns that name.
    fn write_tmp(&self, name: &str, bytes: &[u8]) -> std::io::Result<String> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        for _ in 0..64 {
            let nonce = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ^ (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos() as u64)
                    .unwrap_or(0)
                    << 16);
            let tmp = format!("{TMP_PREFIX}{}-{nonce:x}-{name}", std::process::id());
            let fd = match rfs::openat(
                &self.fd,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            ) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Err(e) = std::fs::File::from(fd).write_all(bytes) {
                let _ = rfs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
                return Err(e);
            }
            return Ok(tmp);
        }
        Err(std::io::Error::other(
            "every temporary name tried was taken",
        ))
    }

    /// Writes what fits of a set, one file at a time in the order given (each whole or not at
    /// all): for a disk too full for the whole set when none was written yet. Returns the names
    /// written.
    pub fn write_each(&self, files: &[(String, Vec<u8>)]) -> Vec<String> {
        let mut done = Vec::new();
        for (name, bytes) in files {
            if self
                .write_set(std::slice::from_ref(&(name.clone(), bytes.clone())))
                .is_ok()
            {
                done.push(name.clone());
            }
        }
        done
    }

    /// Removes tracer's files of the snapshot set `name` (and its directory if that empties it).
    pub fn remove_snapshot(&self, name: &str) {
        if let Ok(snaps) = rfs::openat(
            &self.fd,
            SNAPSHOTS,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            let _ = remove_our_set(&snaps, name);
        }
    }

    /// Removes the oldest of `--snapshots`' sets (SNAPSHOTS/NNNN-...), to make room on a full
    /// disk. Returns its name, or None when there is none left.
    pub fn prune_oldest_snapshot(&self) -> Option<String> {
        let snaps = rfs::openat(
            &self.fd,
            SNAPSHOTS,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        let mut ours: Vec<String> = entries_of(&snaps)
            .ok()?
            .into_iter()
            .filter_map(|n| n.into_string().ok())
            .filter(|n| is_snapshot_name(n))
            .collect();
        ours.sort();
        let oldest = ours.into_iter().next()?;
        remove_our_set(&snaps, &oldest).ok()?;
        Some(oldest)
    }

    fn write_error(&self, e: std::io::Error) -> WriteError {
        let full = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
        let error = if self.removed() {
            Self::fail(&self.path, "it was removed during the recording")
        } else {
            Self::fail(&self.path, e)
        };
        WriteError { error, full }
    }

    /// A subdirectory (created if missing), never through a link.
    pub fn subdir(&self, name: &str) -> Result<OutputDir> {
        let path = self.path.join(name);
        match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(self.write_error(e.into()).error),
        }
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => Self::fail(
                &path,
                "it is a symbolic link or not a directory (tracer never writes through a link)",
            ),
            e => self.write_error(e.into()).error,
        })?;
        Ok(OutputDir {
            path,
            fd,
            created: true,
        })
    }

    /// Removes the directory if tracer made it and nothing was written (a start that failed).
    pub fn remove_if_unused(self) {
        if self.created && self.entries().is_ok_and(|e| e.is_empty()) {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// The names in a directory held open (not `.` and `..`).
fn entries_of(fd: &OwnedFd) -> rustix::io::Result<Vec<std::ffi::OsString>> {
    let mut dir = rfs::Dir::read_from(fd.as_fd())?;
    let mut out = Vec::new();
    while let Some(e) = dir.read() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(out)
}

/// `NNNN-SECONDSs`, the name of a set `--snapshots` wrote.
fn is_snapshot_name(n: &str) -> bool {
    let Some((seq, secs)) = n.split_once('-') else {
        return false;
    };
    seq.len() == 4
        && seq.bytes().all(|b| b.is_ascii_digit())
        && secs
            .strip_suffix('s')
            .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes tracer's files from the set `name` below `parent`, then the set's directory if that
/// left it empty. Anything else in it stays.
fn remove_our_set(parent: &OwnedFd, name: &str) -> rustix::io::Result<()> {
    let set = rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for f in entries_of(&set)? {
        let n = f.to_string_lossy();
        if OUR_FILES.contains(&n.as_ref()) || n.starts_with(TMP_PREFIX) {
            // A link planted under our name is removed itself, never followed; a directory under
            // our name is not ours (unlinkat refuses it).
            let _ = rfs::unlinkat(&set, f.as_os_str(), AtFlags::empty());
        }
    }
    match rfs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOTEMPTY) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `--force` and SNAPSHOTS/: the sets tracer wrote there lose tracer's files (and go when that
/// empties them); other files and directories stay, and so does SNAPSHOTS/ unless it is left
/// empty. A link named SNAPSHOTS is removed itself, never followed.
fn remove_our_snapshots(parent: &OwnedFd) -> rustix::io::Result<()> {
    let snaps = match rfs::openat(
        parent,
        SNAPSHOTS,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            return rfs::unlinkat(parent, SNAPSHOTS, AtFlags::empty())
        }
        Err(e) => return Err(e),
    };
    for n in entries_of(&snaps)? {
        if let Some(name) = n.to_str().filter(|n| is_snapshot_name(n)) {
            match remove_our_set(&snaps, name) {
                // A file or a link with a snapshot's name: not a set of ours.
                Ok(()) | Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {}
                Err(e) => return Err(e),
            }
        }
    }
    match rfs::unlinkat(parent, SNAPSHOTS, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOTEMPTY) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn scratch(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("tracer-out-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn planted_links_are_replaced_not_followed() {
        let base = scratch("links");
        let victim = base.join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let out = base.join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(&victim, out.join("summary.txt")).unwrap();
        // Not empty: refused without --force.
        assert!(OutputDir::prepare(Some(&out), false).is_err());
        let d = OutputDir::prepare(Some(&out), true).unwrap();
        d.write_set(&[("summary.txt".into(), b"report".to_vec())])
            .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(out.join("summary.txt")).unwrap(), b"report");
        // A planted `snapshots` link: the subdirectory is refused, the target untouched.
        let elsewhere = base.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, out.join("snapshots")).unwrap();
        assert!(d.subdir("snapshots").is_err());
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // -o naming a link is refused.
        let link = base.join("link");
        std::os::unix::fs::symlink(&out, &link).unwrap();
        assert!(OutputDir::prepare(Some(&link), true).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn force_removes_our_files_only() {
        let base = scratch("force");
        let out = base.join("out");
        std::fs::create_dir_all(out.join("snapshots/0001-10s")).unwrap();
        std::fs::write(out.join("snapshots/0001-10s/report.json"), b"{}").unwrap();
        std::fs::write(out.join("profile.pb.gz"), b"old").unwrap();
        std::fs::write(out.join("notes.txt"), b"mine").unwrap();
        // A user's files under snapshots/, beside and inside a set of ours: left alone.
        std::fs::create_dir_all(out.join("snapshots/data")).unwrap();
        std::fs::write(out.join("snapshots/data/keep.db"), b"mine").unwrap();
        std::fs::write(out.join("snapshots/0001-10s/mine.txt"), b"mine").unwrap();
        std::fs::create_dir_all(out.join("snapshots/0002-20s")).unwrap();
        std::fs::write(out.join("snapshots/0002-20s/summary.txt"), b"old").unwrap();
        let d = OutputDir::prepare(Some(&out), true).unwrap();
        assert_eq!(
            std::fs::read(out.join("snapshots/data/keep.db")).unwrap(),
            b"mine"
        );
        assert_eq!(
            std::fs::read(out.join("snapshots/0001-10s/mine.txt")).unwrap(),
            b"mine"
        );
        assert!(!out.join("snapshots/0001-10s/report.json").exists());
        assert!(!out.join("snapshots/0002-20s").exists());
        std::fs::remove_dir_all(out.join("snapshots")).unwrap();
        let mut names: Vec<String> = d
            .entries()
            .unwrap()
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["notes.txt"]);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn directories_others_can_write_are_refused() {
        let base = scratch("others");
        let out = base.join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = OutputDir::prepare(Some(&out), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("other users can write it"), "{e}");
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(OutputDir::prepare(Some(&out), false).is_err());
        let c = std::ffi::CString::new(out.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = OutputDir::prepare(Some(&out), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("belongs to another user (uid 65534)"), "{e}");
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 0, 0) }, 0);
        assert!(OutputDir::prepare(Some(&out), false).is_ok());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn squatted_temporary_names_are_skipped() {
        let base = scratch("squat");
        let d = OutputDir::prepare(Some(&base.join("out")), false).unwrap();
        // Every name of the old scheme, and a few of the new one's, taken.
        for name in ["summary.txt", "report.json"] {
            let old = format!("{TMP_PREFIX}{}-{name}", std::process::id());
            std::fs::write(base.join("out").join(old), b"squatter").unwrap();
        }
        d.write_set(&[
            ("summary.txt".into(), b"ok".to_vec()),
            ("report.json".into(), b"{}".to_vec()),
        ])
        .unwrap();
        assert_eq!(std::fs::read(base.join("out/summary.txt")).unwrap(), b"ok");
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn fresh_directories_are_private_and_exclusive() {
        let base = scratch("fresh");
        let name = base.join("tracer-x");
        let a = OutputDir::create_fresh(name.to_str().unwrap()).unwrap();
        let b = OutputDir::create_fresh(name.to_str().unwrap()).unwrap();
        assert_ne!(a.path(), b.path());
        assert!(b.path().to_string_lossy().ends_with("tracer-x-2"));
        let mode = std::fs::metadata(a.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Unused: removed again.
        let p = b.path().to_path_buf();
        b.remove_if_unused();
        assert!(!p.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_failed_set_leaves_the_previous_one() {
        let base = scratch("sets");
        let d = OutputDir::prepare(Some(&base.join("out")), false).unwrap();
        d.write_set(&[("report.json".into(), b"one".to_vec())])
            .unwrap();
        // A directory in the way of a rename: the set fails and no temporary file is left
        // behind. (A full disk fails before any rename: tests/faults.rs.)
        std::fs::create_dir(base.join("out/summary.txt")).unwrap();
        std::fs::write(base.join("out/summary.txt/x"), b"").unwrap();
        assert!(d
            .write_set(&[
                ("summary.txt".into(), b"two".to_vec()),
                ("report.json".into(), b"two".to_vec()),
            ])
            .is_err());
        assert_eq!(std::fs::read(base.join("out/report.json")).unwrap(), b"one");
        let left: Vec<String> = d
            .entries()
            .unwrap()
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TMP_PREFIX))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
