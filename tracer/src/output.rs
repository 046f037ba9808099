//! The output directory, written safely: tracer runs as root, often in directories other users can
//! write, so it never follows a link it did not make and never writes a file in place.
//!
//! - The directory is created exclusively (a fresh `tracer-YYYYMMDD-HHMMSS[-N]`, mode 0700), or an
//!   existing `-o DIR` is taken only when it is empty (with `--force`: tracer's own reports in it
//!   are removed first, other files are left alone), and never when DIR itself is a link.
//! - Everything is written through the directory's file descriptor (`openat`, `O_NOFOLLOW`,
//!   `O_EXCL` on a temporary name), then renamed over the final name: a link planted under a
//!   report's name is replaced, not followed, and a reader never sees half a file.
//! - A set of reports is written whole or not at all: every temporary file is written first (a
//!   full disk fails there), then they are all renamed. The directory keeps the last complete set.

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

impl OutputDir {
    /// The directory for a recording: `requested` (`-o`), or a fresh default name.
    pub fn prepare(requested: Option<&Path>, force: bool) -> Result<OutputDir> {
        let dir = match requested {
            None => Self::create_fresh(&format!("tracer-{}", crate::util::timestamp()))?,
            Some(p) => Self::take(p, force)?,
        };
        // Writable, as root may still be refused (a read-only mount).
        dir.write_set(&[(".tracer-write-test".to_string(), Vec::new())])?;
        let _ = rfs::unlinkat(&dir.fd, ".tracer-write-test", AtFlags::empty());
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
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
                remove_tree(&dir.fd, &name).map_err(|e| Self::fail(path, e))?;
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
    pub fn write_set(&self, files: &[(String, Vec<u8>)]) -> Result<()> {
        let mut written: Vec<(String, &str)> = Vec::new();
        let cleanup = |written: &[(String, &str)]| {
            for (tmp, _) in written {
                let _ = rfs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            }
        };
        for (name, bytes) in files {
            let tmp = format!("{TMP_PREFIX}{}-{name}", std::process::id());
            let r = rfs::openat(
                &self.fd,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
            .map_err(std::io::Error::from)
            .and_then(|fd| std::fs::File::from(fd).write_all(bytes));
            if let Err(e) = r {
                let _ = rfs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
                cleanup(&written);
                return Err(self.write_error(e));
            }
            written.push((tmp, name.as_str()));
        }
        for (i, (tmp, name)) in written.iter().enumerate() {
            if let Err(e) = rfs::renameat(&self.fd, tmp.as_str(), &self.fd, *name) {
                cleanup(&written[i..]);
                return Err(self.write_error(e));
            }
        }
        Ok(())
    }

    fn write_error(&self, e: impl std::fmt::Display) -> Error {
        if self.removed() {
            Self::fail(&self.path, "it was removed during the recording")
        } else {
            Self::fail(&self.path, e)
        }
    }

    /// A subdirectory (created if missing), never through a link.
    pub fn subdir(&self, name: &str) -> Result<OutputDir> {
        let path = self.path.join(name);
        match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(self.write_error(e)),
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
            e => self.write_error(e),
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

/// Removes `name` below `parent`: a link or a file is unlinked (never followed); a directory is
/// emptied the same way, then removed.
fn remove_tree(parent: &OwnedFd, name: &OsStr) -> rustix::io::Result<()> {
    match rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(sub) => {
            for child in entries_of(&sub)? {
                remove_tree(&sub, &child)?;
            }
            rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)
        }
        // A link, or not a directory.
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            rfs::unlinkat(parent, name, AtFlags::empty())
        }
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
        let d = OutputDir::prepare(Some(&out), true).unwrap();
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
