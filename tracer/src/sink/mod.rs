//! Sinks: where a recording's reports go while it runs and when it ends (the progress line, the
//! live view, the /metrics text, the report files, the snapshots). The collect loop feeds every
//! sink the same report; a new exporter is one new file here and one line in `record::sinks`.

pub mod files;
pub mod live;
pub mod metrics;
pub mod progress;
pub mod snapshots;

use crate::error::Result;
use crate::report::Report;

pub trait Sink {
    /// Does this sink want the report at every tick (about once a second)? Reports are built
    /// only when some sink does.
    fn wants_ticks(&self) -> bool {
        false
    }

    /// The report as it stands, before the first tick (inside the recording's runtime). A
    /// failure ends the recording.
    fn start(&mut self, _r: &Report) -> Result<()> {
        Ok(())
    }

    /// The report as it stands, at a tick (only if `wants_ticks`).
    fn tick(&mut self, _r: &Report) {}

    /// Does this sink want the report at every checkpoint?
    fn wants_checkpoints(&self) -> bool {
        false
    }

    /// The report of a checkpoint. A failure is the sink's to say: the recording goes on.
    fn checkpoint(&mut self, _r: &Report) {}

    /// The recording stopped (before the final report is made: the probes are being removed).
    fn stop(&mut self) {}

    /// The final report.
    fn finish(&mut self, _r: &Report) -> Result<()> {
        Ok(())
    }
}
