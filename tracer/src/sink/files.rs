//! The report files in the output directory: rewritten at every checkpoint, so that the directory
//! always holds the last complete set (a failure at the end, a full disk, loses only what came
//! after it), and written once more at the end. On a full disk `--snapshots`' oldest sets make
//! room first; when no complete set was ever written, what fits is written file by file, the
//! summary first, so that a recording never leaves nothing.

use super::Sink;
use crate::error::{Error, Result};
use crate::output::OutputDir;
use crate::render::{self, Format};
use crate::report::Report;
use crate::say;

pub struct Files<'a> {
    dir: &'a OutputDir,
    formats: Vec<Format>,
    /// Seconds into the recording of the last report set written whole.
    last: Option<f64>,
    /// The files of a set written one by one (the disk too full for the whole set, before any
    /// set was written whole).
    partial: Vec<String>,
    /// A write failed (said once, then said again only when writing works again).
    failing: bool,
    /// Snapshot sets removed to make room.
    pruned: u32,
}

impl<'a> Files<'a> {
    pub fn new(dir: &'a OutputDir, formats: &[Format]) -> Files<'a> {
        Files {
            dir,
            formats: formats.to_vec(),
            last: None,
            partial: Vec::new(),
            failing: false,
            pruned: 0,
        }
    }

    /// What is in the directory, for a message.
    fn kept(&self) -> String {
        match self.last {
            _ if self.dir.removed() => {
                "nothing is kept on disk: the summary above is all there is".into()
            }
            Some(at) => format!(
                "{} keeps the reports of the checkpoint at {at:.0}s",
                self.dir.current_path().display()
            ),
            None if !self.partial.is_empty() => format!(
                "{} keeps {} (the rest did not fit)",
                self.dir.current_path().display(),
                self.partial.join(", ")
            ),
            None => "no report was written before".into(),
        }
    }

    /// Writes the set of `r`; on a full disk, removes the oldest snapshots until it fits, and
    /// when none is left and no set was ever written whole, writes what fits file by file.
    fn write(&mut self, r: &Report) -> std::result::Result<(), Error> {
        let files = render::files(r, Some(&self.dir.current_path()), &self.formats);
        loop {
            match self.dir.write_set(&files) {
                Ok(()) => {
                    self.last = Some(r.elapsed.as_secs_f64());
                    self.partial.clear();
                    return Ok(());
                }
                Err(e) if e.full => {
                    if let Some(gone) = self.dir.prune_oldest_snapshot() {
                        if self.pruned == 0 {
                            say!("tracer: WARNING: the disk is full: removing the oldest snapshots to make room for the reports (first {gone})");
                        }
                        self.pruned += 1;
                        continue;
                    }
                    if self.last.is_none() {
                        self.partial = self.dir.write_each(&files);
                    }
                    return Err(e.error);
                }
                Err(e) => return Err(e.error),
            }
        }
    }
}

impl Sink for Files<'_> {
    fn wants_checkpoints(&self) -> bool {
        true
    }

    /// Writes the reports of a checkpoint (the recording goes on when that fails).
    fn checkpoint(&mut self, r: &Report) {
        match self.write(r) {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !self.failing {
                    say!(
                        "tracer: WARNING: {e}; the recording goes on ({})",
                        self.kept()
                    );
                }
                self.failing = true;
            }
        }
    }

    /// The final reports; when they cannot be written, the error says what the directory
    /// still holds.
    fn finish(&mut self, r: &Report) -> Result<()> {
        self.write(r)
            .map_err(|e| Error::Other(format!("{e}; {}", self.kept())))
    }
}
