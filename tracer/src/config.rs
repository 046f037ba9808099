//! How a recording follows its targets (`Mode`, `NativeMode`): chosen on the command line, read by
//! the collector, the report and the renderers alike, so it sits below all of them.

/// Which native frames join the Python ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NativeMode {
    /// Only the native frames below the innermost Python frame (the C path to the allocation or
    /// syscall); all native frames when there is no Python stack.
    #[default]
    Leaf,
    All,
    None,
}

/// How allocations are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Every allocation and free, through uprobes on the allocator (a short-window debugging
    /// mode: each probe hit costs microseconds).
    #[default]
    Exact,
    /// For production: no allocator probe (the heap census and Python stacks read from outside);
    /// with --budget, allocator probes in short budgeted windows, what they saw then followed from
    /// outside the process.
    Watch,
}
