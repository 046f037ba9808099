//! The command line: subcommands and their options (clap), parsed by main.rs and read by the
//! subcommands; nothing here runs anything.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::Mode;
use crate::{render, report, util};

#[derive(Parser)]
#[command(
    name = "tracer",
    version,
    about = "Find memory and descriptor leaks in running Python services (eBPF)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Trace running CPython processes (-p) or launch one (-- CMD ARGS...), then write reports.
    Record(RecordArgs),
    /// A live view of what grows, refreshed every second (watch mode by default); q quits.
    Top(RecordArgs),
    /// Check privileges and kernel features; with -p, what tracer finds in that process.
    Doctor {
        /// A process to inspect.
        #[arg(short, long)]
        pid: Option<u32>,
    },
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// Process id of a running CPython process (repeatable).
    #[arg(short, long = "pid")]
    pub pids: Vec<u32>,
    /// The Python processes of a container (repeatable): full or short id of a docker,
    /// containerd, cri-o or podman container, or a runc/crun container name. Processes that
    /// start in it later are traced too.
    #[arg(long = "container", value_name = "ID")]
    pub containers: Vec<String>,
    /// The Python processes of a cgroup (v2 path, e.g. /system.slice/app.service) and below it
    /// (repeatable), including ones that start later.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<String>,
    /// Every Python process on the host, including ones that start while tracing.
    #[arg(long)]
    pub all_python: bool,
    /// Also trace the Python processes that the targets start (workers, subprocesses).
    #[arg(long)]
    pub children: bool,
    /// Stop after this long (e.g. 30s, 5m, 1d), counted from the start (of the command, when
    /// launching); default: until Ctrl-C or every target has exited.
    #[arg(short, long, value_parser = util::parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Output directory: created if missing, or an empty one (default: a new
    /// ./tracer-YYYYMMDD-HHMMSS, mode 0700; top writes reports only with -o).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Write into a non-empty output directory, replacing tracer's earlier reports there (other
    /// files are left alone).
    #[arg(long)]
    pub force: bool,
    /// Only report allocations and descriptors outstanding for at least this long.
    #[arg(long, value_parser = util::parse_duration, default_value = "0s", allow_hyphen_values = true)]
    pub min_age: Duration,
    /// exact: every allocation through allocator probes (for short debugging windows: slows
    /// allocation-heavy code many times). watch: for production: the heap census and stack
    /// samples read from outside, no allocator probe (unless --budget). Descriptors: exact in
    /// both. [default: exact for record, watch for top]
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Watch mode: also attach the allocator probes in short windows (allocation stacks), armed
    /// this share of the time, in percent (windows and the kernel's time to remove the probes,
    /// both counted; e.g. 2). A window stalls allocation-heavy code while armed (about 0.8 s on small VMs).
    /// 0: no allocator probe at all.
    #[arg(long, default_value_t = 0.0, value_parser = util::parse_percent)]
    pub budget: f64,
    /// Watch mode with --budget: how long each window of allocator probes lasts [default: 200ms].
    #[arg(long, value_parser = util::parse_duration, allow_hyphen_values = true)]
    pub window: Option<Duration>,
    /// Time between checkpoints (at least 1s): verdicts (growing / stable / freed) compare them.
    /// (Watch mode with --budget takes one after each window instead.)
    #[arg(long, value_parser = util::parse_duration, default_value = "10s", allow_hyphen_values = true)]
    pub interval: Duration,
    /// Do not take the heap census (every INTERVAL: the gc-tracked objects read from outside, to
    /// name the lists, dicts and sets that keep growing).
    #[arg(long)]
    pub no_census: bool,
    /// Also write the reports at every checkpoint (into OUTPUT/snapshots/).
    #[arg(long)]
    pub snapshots: bool,
    /// Serve live metrics at http://ADDR/metrics in the Prometheus text format (PORT alone
    /// listens on 127.0.0.1).
    #[arg(long, value_parser = util::parse_listen_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Report formats, comma-separated: folded, svg, json, pprof, speedscope, or all
    /// (summary.txt is always written).
    #[arg(long, value_parser = render::parse_formats, default_value = "folded,svg,json")]
    pub format: render::Formats,
    /// Show every native frame below the Python ones.
    #[arg(long, conflicts_with = "no_native")]
    pub native: bool,
    /// Show Python frames only.
    #[arg(long)]
    pub no_native: bool,
    /// The application's code is under this directory (absolute, as the target sees it;
    /// repeatable): suspects are placed at the innermost frame of a file under one of them,
    /// with the library frames beneath. Default: every file outside the standard library and
    /// site-packages/dist-packages.
    #[arg(long = "app-path", value_name = "DIR", value_parser = parse_app_path)]
    pub app_paths: Vec<String>,
    /// How many ended processes (exited or exec'd) the reports keep at most.
    #[arg(long, hide = true, default_value_t = report::MAX_CLOSED)]
    pub keep_ended: usize,
    /// Benchmark: do not walk Python frames (native stacks only).
    #[arg(long, hide = true)]
    pub no_python_walk: bool,
    /// Benchmark floor: attach do-nothing probes at the same places instead of tracing.
    #[arg(long, hide = true)]
    pub floor: bool,
    /// Exact mode: do not re-attribute objects CPython reuses from its free lists (faster on
    /// allocation-heavy code; a reused object then keeps the stack of its block's first owner).
    #[arg(long)]
    pub no_recycle: bool,
    /// Census: do not sample the stacks on CPU (a perf event per CPU, while a container
    /// grows) to find the line that feeds it; the sampler from outside still runs.
    #[arg(long)]
    pub no_cpu_samples: bool,
    /// Command to launch and trace from its first line.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// The live view (`tracer top`).
    #[arg(skip)]
    pub live: bool,
}

/// `--app-path`: an absolute directory (frames name their files by absolute paths).
fn parse_app_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && s.len() > 1 {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not an absolute directory (give the application's directory as the target sees it, e.g. /srv/app)"
        ))
    }
}

impl RecordArgs {
    /// How the reports tell the application's frames.
    pub fn places(&self) -> report::AppPaths {
        report::AppPaths::new(&self.app_paths)
    }

    pub fn mode(&self) -> Mode {
        self.mode
            .unwrap_or(if self.live { Mode::Watch } else { Mode::Exact })
    }
}
