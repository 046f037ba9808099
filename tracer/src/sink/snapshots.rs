//! `--snapshots`: the reports of every checkpoint, each set in its own directory
//! (OUTPUT/snapshots/NNNN-SECONDSs/).

use super::Sink;
use crate::output::OutputDir;
use crate::render::{self, Format};
use crate::report::Report;
use crate::say;

pub struct Snapshots<'a> {
    dir: &'a OutputDir,
    formats: Vec<Format>,
    seq: u32,
}

impl<'a> Snapshots<'a> {
    pub fn new(dir: &'a OutputDir, formats: &[Format]) -> Snapshots<'a> {
        Snapshots {
            dir,
            formats: formats.to_vec(),
            seq: 0,
        }
    }
}

impl Sink for Snapshots<'_> {
    fn wants_checkpoints(&self) -> bool {
        true
    }

    fn checkpoint(&mut self, r: &Report) {
        self.seq += 1;
        let name = format!("{:04}-{:.0}s", self.seq, r.elapsed.as_secs_f64());
        let sub = self.dir.subdir("snapshots").and_then(|s| s.subdir(&name));
        if let Err(e) = sub.and_then(|sub| render::write_all(r, &sub, &self.formats)) {
            say!("tracer: WARNING: snapshot {name} not written: {e}");
        }
    }
}
