//! The summary's stacks: where the heap grew, the top allocation stacks, the open descriptors
//! by site.

use std::fmt::Write as _;

use super::format::{human_bytes, short_stack, thousands};
use crate::report::{Mode, ProcReport, Report};
use crate::text::clean;

/// The stack sections of process `p`.
pub(super) fn section(o: &mut String, r: &Report, p: &ProcReport) {
    if !p.heap_growth.is_empty() {
        let _ = writeln!(
            o,
            "  the heap grew at (since attach: brk moves, mappings still mapped):"
        );
        for g in p.heap_growth.iter().take(4) {
            let _ = writeln!(
                o,
                "    {:>10}  {}{}",
                human_bytes(g.brk + g.mapped),
                short_stack(&g.frames, 4),
                match (g.brk, g.mapped) {
                    (0, m) => format!("  (mapped {})", human_bytes(m)),
                    (b, 0) => format!("  (brk {})", human_bytes(b)),
                    (b, m) => format!("  (brk {}, mapped {})", human_bytes(b), human_bytes(m)),
                }
            );
        }
    }
    if !p.allocs.is_empty() {
        let _ = writeln!(
            o,
            "  top {} stacks (outstanding):",
            if r.mode == Mode::Watch {
                "heap growth"
            } else {
                "allocation"
            }
        );
        for a in p.allocs.iter().take(5) {
            let _ = writeln!(
                o,
                "    {:>10} {:>9} allocs  oldest {:>5.0}s  {}",
                human_bytes(a.bytes),
                thousands(a.count),
                a.oldest_age.as_secs_f64(),
                short_stack(&a.frames, 4)
            );
        }
    }
    if !p.fds.is_empty() {
        let _ = writeln!(o, "  open descriptors by site:");
        for site in p.fd_sites.iter().take(8) {
            let examples = if site.examples.is_empty() {
                String::new()
            } else {
                format!(
                    "; e.g. {}{}",
                    clean(&site.examples.join(", ")),
                    if site.names > site.examples.len() {
                        format!(" (+{} more)", site.names - site.examples.len())
                    } else {
                        String::new()
                    }
                )
            };
            let _ = writeln!(
                o,
                "    {:>6}  {}{examples}",
                site.count,
                short_stack(&site.frames, 4)
            );
        }
    }
}
