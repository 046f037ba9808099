//! The terminal of the live view: crossterm's alternate screen with raw keys and a hidden cursor
//! while it lives, drawn by ratatui; restored on every way out (the end, an error, a signal, a
//! panic). The keys are read on a thread of their own.

use std::io::IsTerminal as _;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::DefaultTerminal;

use super::view::view;
use crate::error::{Error, Result};
use crate::report::Report;

/// The alternate screen, raw keys and a hidden cursor while alive; the terminal as it was after.
pub struct Terminal {
    term: DefaultTerminal,
}

/// Leaves the alternate screen and raw mode, shows the cursor (errors ignored: there is nothing
/// better to do on the way out).
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

impl Terminal {
    /// Fails unless stdin and stdout are a terminal.
    pub fn check() -> Result<()> {
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
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
        let failed = |e: std::io::Error| Error::Other(format!("cannot set up the terminal: {e}"));
        terminal::enable_raw_mode().map_err(failed)?;
        // From here on, every way out restores: Drop, and a panic (its hook runs first).
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        let entered = execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .and_then(|_| {
            ratatui::Terminal::new(ratatui::backend::CrosstermBackend::new(std::io::stdout()))
        });
        match entered {
            Ok(term) => Ok(Terminal { term }),
            Err(e) => {
                restore();
                Err(failed(e))
            }
        }
    }

    /// Shows `r` (a stdout that went away is ignored).
    pub fn draw(&mut self, r: &Report) {
        let view = view(r);
        let _ = self.term.draw(|f| f.render_widget(view, f.area()));
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        restore();
    }
}

/// Reads keys on a thread; sends () on q, Q or Ctrl-C (raw mode: Ctrl-C is a key here).
pub fn quit_key() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(ev) = event::read() {
            let Event::Key(k) = ev else {
                continue;
            };
            let quit = k.kind == KeyEventKind::Press
                && match k.code {
                    KeyCode::Char('q' | 'Q') => true,
                    KeyCode::Char('c') => k.modifiers.contains(KeyModifiers::CONTROL),
                    _ => false,
                };
            if quit {
                let _ = tx.send(());
                return;
            }
        }
    });
    rx
}
