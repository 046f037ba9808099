//! Heap census passes (read from outside; the targets run on), the resident memory read with
//! them, and the Python stacks the census wants while a container grows: read from outside every
//! 10 ms (stack reads), and the kernel's on-CPU sampler's samples (a perf event per CPU). Only
//! the latter are called samples.

use std::time::Duration;

use super::Collector;
use crate::say;

/// The longest the census holds the collector's loop at once (see `Collector::census`).
const CENSUS_SLICE: Duration = Duration::from_millis(50);

/// The readings of a process's resident memory.
#[derive(Default)]
pub struct ResidentState {
    reader: crate::resident::Reader,
    /// (seconds since tracing began, breakdown), oldest first; at most `MAX_CHECKPOINTS`
    /// (the older half thinned, as checkpoints are).
    pub readings: Vec<(f64, crate::resident::Breakdown)>,
}

impl ResidentState {
    fn read(&mut self, pid: u32, at: f64) {
        let Some(mut b) = self.reader.read(pid) else {
            return;
        };
        // The ranges were for this reading only.
        b.pools.ranges = Vec::new();
        b.heaps.ranges = Vec::new();
        self.readings.push((at, b));
        if self.readings.len() > crate::snapshot::MAX_CHECKPOINTS {
            let half = self.readings.len() / 2;
            let mut i = 0;
            self.readings.retain(|_| {
                i += 1;
                i == 1 || i > half || i % 2 == 0
            });
        }
    }
}

/// Threads whose stacks one stack read takes (every 10 ms).
const THREADS_PER_READ: usize = 64;

impl Collector {
    /// Reads the Python stacks every live target's threads are running (from outside, the
    /// interpreter's thread list read fresh at each read): the census attributes its growing
    /// containers to the call paths that reach the lines using them.
    ///
    /// While a census wants stacks, the kernel's on-CPU sampler records that process too (see
    /// `take_cpu_samples`); if it cannot run, these reads are the only stacks (said once).
    pub fn read_stacks(&mut self) {
        for t in self.targets.iter_mut().filter(|t| t.exited_after.is_none()) {
            let wants = t.census.as_ref().is_some_and(|c| c.wants_stacks);
            if t.replaced(&self.probes) {
                continue;
            }
            let Some(c) = t.census.as_mut() else {
                continue;
            };
            if wants != c.sampled && self.sampler_error.is_none() {
                match self.probes.set_sampled(t.pid, wants) {
                    Ok(()) => c.sampled = wants,
                    Err(e) => {
                        say!("tracer: on-CPU stack samples are off ({e}); stacks are sampled from outside only");
                        self.sampler_error = Some(e.to_string());
                    }
                }
            }
            if !wants {
                continue;
            }
            let Some(rt) = t.threads.runtime.as_mut() else {
                continue;
            };
            // A short thread list is read at every stack read (a request thread lives a few
            // milliseconds); a long one is the last refresh's, read a slice at a time.
            let tstates = if t.threads.published.len() <= THREADS_PER_READ {
                rt.tstates()
            } else {
                let mut all: Vec<u64> = t.threads.published.values().copied().collect();
                all.sort_unstable();
                let from = t.threads.read_cursor % all.len();
                t.threads.read_cursor = from + THREADS_PER_READ;
                all.into_iter()
                    .cycle()
                    .skip(from)
                    .take(THREADS_PER_READ)
                    .collect()
            };
            c.add_stacks(rt.stacks(&tstates));
        }
    }

    /// Leaves the kernel's on-CPU sampler off (`--no-cpu-samples`).
    pub fn no_cpu_samples(&mut self) {
        self.sampler_error = Some("--no-cpu-samples".into());
    }

    /// Moves the kernel's on-CPU samples of every sampled process into its census.
    fn take_cpu_samples(&mut self) {
        let mut samples = self.probes.take_cpu_samples();
        for t in self.targets.iter_mut() {
            let (Some(c), Some(rt)) = (t.census.as_mut(), t.threads.runtime.as_mut()) else {
                continue;
            };
            for (key, n) in samples.remove(&t.pid).unwrap_or_default() {
                if let Some(stack) = self.probes.pystack(key) {
                    c.add_stack(rt.labels(key, &stack), n);
                }
            }
        }
    }

    /// Starts a census round: a heap census pass of every live target (read from outside; the
    /// targets run on), with its resident memory. A round is taken in slices of at most
    /// `CENSUS_SLICE` (`census_continue`), so that the collector's loop keeps its pace however
    /// many processes there are: a pass and a resident reading take tens of milliseconds each,
    /// and 40 Pythons starting at once held the loop for two seconds, in which the threads of
    /// the new ones went unpublished and some exited before their stacks were read. Returns
    /// whether the round is done.
    pub fn census(&mut self) -> bool {
        self.take_cpu_samples();
        self.census_round += 1;
        self.census_continue()
    }

    /// Goes on with the census round: the targets least recently passed first, until the round
    /// is done (true), or the slice is spent or processes wait for their entries (false: call
    /// again soon, after `adds_pending` is served).
    pub fn census_continue(&mut self) -> bool {
        let round = self.census_round;
        let mut due: Vec<usize> = (0..self.targets.len())
            .filter(|&i| {
                let t = &self.targets[i];
                t.exited_after.is_none() && t.census_round < round
            })
            .collect();
        due.sort_by_key(|&i| self.targets[i].census_round);
        self.census_slice(&due, Some(round))
    }

    /// A first census pass for the targets whose census came after the round's pass (a
    /// launched command maps its interpreter later, a process adopted later): without it, a
    /// recording shorter than the interval had no census for them. Called every tick; one
    /// slice of them a call.
    pub fn first_census_passes(&mut self) {
        let due: Vec<usize> = (0..self.targets.len())
            .filter(|&i| {
                let t = &self.targets[i];
                t.exited_after.is_none()
                    && !t.replaced(&self.probes)
                    && t.census
                        .as_ref()
                        .is_some_and(|c| c.passes == 0 && c.error.is_none())
            })
            .collect();
        self.census_slice(&due, None);
    }

    /// Census passes of the targets `due`, in order: one at least (processes that start all
    /// the time do not starve it), then until `CENSUS_SLICE` is spent or processes wait for
    /// their entries. `round`: the passes of that round, with their resident readings; None:
    /// first passes only. Returns whether every one was passed.
    fn census_slice(&mut self, due: &[usize], round: Option<u64>) -> bool {
        let began = std::time::Instant::now();
        let at = self.started.elapsed().as_secs_f64();
        for (n, &i) in due.iter().enumerate() {
            if n > 0 && (began.elapsed() >= CENSUS_SLICE || self.adds_pending()) {
                return false;
            }
            let t = &mut self.targets[i];
            if let Some(r) = round {
                t.census_round = r;
            }
            if t.replaced(&self.probes) {
                continue;
            }
            if let Some(c) = t.census.as_mut() {
                c.pass(at, t.threads.runtime.as_mut());
            }
            if round.is_some() && self.census {
                t.resident.read(t.pid, at);
            }
        }
        true
    }
}
