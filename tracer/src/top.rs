//! `tracer top`: a live terminal view of what grows, refreshed every second; q quits.

use std::fmt::Write as _;
use std::io::{Read, Write};

use crate::error::{Error, Result};
use crate::render::summary::{human_bytes, suspect_line, thousands};
use crate::report::{Coverage, Report};

/// Raw keys, the alternate screen and a hidden cursor while alive; the terminal as it was after.
pub struct Terminal {
    saved: libc::termios,
}

impl Terminal {
    /// Fails unless stdin and stdout are a terminal.
    pub fn check() -> Result<()> {
        let tty = unsafe { libc::isatty(0) == 1 && libc::isatty(1) == 1 };
        if tty {
            Ok(())
        } else {
            Err(Error::BadArgument(
                "tracer top needs a terminal on stdin and stdout (use `tracer record` otherwise)"
                    .into(),
            ))
        }
    }

    pub fn enter() -> Result<Terminal> {
        Self::check()?;
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return Err(Error::Other("cannot read the terminal's settings".into()));
        }
        let mut raw = saved;
        raw.c_lflag &= !(libc::ICANON | libc::ECHO);
        raw.c_cc[libc::VMIN] = 1;
        raw.c_cc[libc::VTIME] = 0;
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) };
        print!("\x1b[?1049h\x1b[?25l");
        let _ = std::io::stdout().flush();
        Ok(Terminal { saved })
    }

    /// Terminal width and height.
    pub fn size() -> (usize, usize) {
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_col > 0 {
            (ws.ws_col as usize, ws.ws_row as usize)
        } else {
            (120, 40)
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        print!("\x1b[?25h\x1b[?1049l");
        let _ = std::io::stdout().flush();
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

/// Reads keys on a thread; sends () when q (or Q) is pressed.
pub fn quit_key() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        while let Ok(1) = std::io::stdin().read(&mut b) {
            if b[0] == b'q' || b[0] == b'Q' {
                let _ = tx.send(());
                return;
            }
        }
    });
    rx
}

/// One screen of the live view.
pub fn screen(r: &Report, width: usize, height: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "tracer top - {:.0}s - {} - q quits",
        r.elapsed.as_secs_f64(),
        match r.budget {
            Some((_, 0.0)) => "watch mode (no allocator probe)".to_string(),
            Some((_, b)) => format!("watch mode (budget {b}%)"),
            None => "exact mode".into(),
        }
    );
    for p in &r.procs {
        let _ = writeln!(o);
        let armed = match &p.coverage {
            Coverage::Sampled {
                armed_pct, windows, ..
            } => {
                format!(", {windows} windows, probes armed {armed_pct:.1}%")
            }
            _ => String::new(),
        };
        let _ = writeln!(
            o,
            "{}{} - {}{}",
            p.title(),
            if p.execd.is_some() {
                " (exec'd)"
            } else if p.exited_after.is_some() {
                " (exited)"
            } else {
                ""
            },
            p.interpreter,
            armed
        );
        let _ = writeln!(
            o,
            "  {}: {} in {} objects; open descriptors: {}",
            if r.budget.is_some() {
                "memory (sampled)"
            } else {
                "memory"
            },
            human_bytes(p.total_bytes),
            thousands(p.total_allocs),
            p.open_fds
        );
        let _ = writeln!(
            o,
            "    {:<8} {:>14} {:>11} {:>9} {:>7}  where",
            "verdict", "growth", "now", "objects", "oldest"
        );
        if p.suspects.is_empty() {
            // Before the first checkpoint: the biggest stacks so far.
            for a in p.allocs.iter().take(10) {
                let _ = writeln!(
                    o,
                    "    {:<8} {:>14} {:>11} {:>9} {:>7.0}s  {}",
                    "-",
                    "-",
                    human_bytes(a.bytes),
                    thousands(a.count),
                    a.oldest_age.as_secs_f64(),
                    crate::render::summary::python_line(&a.frames)
                );
            }
        } else {
            for s in p.suspects.iter().take(10) {
                let _ = writeln!(o, "{}", suspect_line(s));
            }
        }
        // The heap census: the containers that grow, by name.
        if let Some(c) = &p.census {
            for k in c
                .containers
                .iter()
                .filter(|k| k.trend.verdict == crate::trend::Verdict::Growing)
                .take(3)
            {
                let _ = writeln!(
                    o,
                    "    census: {} ({}) {} items, +{}/min{}",
                    k.name,
                    k.type_name,
                    thousands(k.len),
                    thousands(k.trend.per_min.max(0.0) as u64),
                    k.uses
                        .first()
                        .map(|u| if k.root == "local" {
                            format!(", in the frame running {u}")
                        } else {
                            format!(", used at {u}")
                        })
                        .unwrap_or_default()
                );
            }
        }
    }
    let h = &r.health;
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "tracer: {} allocator calls; dropped {} allocations, {} descriptors (maps full); {} stacks lost",
        thousands(h.alloc_calls),
        h.alloc_map_full,
        h.fd_map_full,
        h.stacks_lost
    );
    // Fit the terminal: cut long lines and what does not fit.
    let mut out = String::from("\x1b[H\x1b[2J");
    for line in o.lines().take(height.saturating_sub(1)) {
        let cut: String = line.chars().take(width.saturating_sub(1)).collect();
        out.push_str(&cut);
        out.push_str("\r\n");
    }
    out
}
