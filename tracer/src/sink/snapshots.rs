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

    /// Writes this checkpoint's set; on a full disk, older sets make room (the newest are
    /// worth more), and when none is left this one is given up.
    fn checkpoint(&mut self, r: &Report) {
        self.seq += 1;
        let name = format!("{:04}-{:.0}s", self.seq, r.elapsed.as_secs_f64());
        let files = render::files(r, Some(&self.dir.current_path()), &self.formats);
        loop {
            let sub = match self.dir.subdir("snapshots").and_then(|s| s.subdir(&name)) {
                Ok(sub) => sub,
                Err(e) => {
                    say!("tracer: WARNING: snapshot {name} not written: {e}");
                    return;
                }
            };
            match sub.write_set(&files) {
                Ok(()) => return,
                Err(e) if e.full => {
                    // Its own empty directory goes first, then the oldest set.
                    self.dir.remove_snapshot(&name);
                    match self.dir.prune_oldest_snapshot() {
                        Some(_) => continue,
                        None => {
                            say!("tracer: WARNING: snapshot {name} not written: {e}");
                            return;
                        }
                    }
                }
                Err(e) => {
                    say!("tracer: WARNING: snapshot {name} not written: {e}");
                    return;
                }
            }
        }
    }
}
