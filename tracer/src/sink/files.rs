//! The report files in the output directory: rewritten at every checkpoint, so that the directory
//! always holds the last complete set (a failure at the end, a full disk, loses only what came
//! after it), and written once more at the end.

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
    /// A write failed (said once, then said again only when writing works again).
    failing: bool,
}

impl<'a> Files<'a> {
    pub fn new(dir: &'a OutputDir, formats: &[Format]) -> Files<'a> {
        Files {
            dir,
            formats: formats.to_vec(),
            last: None,
            failing: false,
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
                self.dir.path().display()
            ),
            None => "no report was written before".into(),
        }
    }
}

impl Sink for Files<'_> {
    fn wants_checkpoints(&self) -> bool {
        true
    }

    /// Writes the reports of a checkpoint (the recording goes on when that fails).
    fn checkpoint(&mut self, r: &Report) {
        match render::write_all(r, self.dir, &self.formats) {
            Ok(()) => {
                self.last = Some(r.elapsed.as_secs_f64());
                self.failing = false;
            }
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
        render::write_all(r, self.dir, &self.formats)
            .map_err(|e| Error::Other(format!("{e}; {}", self.kept())))
    }
}
