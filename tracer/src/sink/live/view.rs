//! The screen of the live view (`tracer top`): the report's lines, what grows first, cut where
//! the terminal ends. It formats the report and decides nothing.

use std::fmt::Write as _;

use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Text};
use ratatui::widgets::Paragraph;

use crate::render::summary::{human_bytes, suspect_line, thousands};
use crate::report::{Coverage, Report};

/// The screen of `r`: its lines, the title in bold; what does not fit is cut.
pub(super) fn view(r: &Report) -> Paragraph<'static> {
    let mut text: Vec<Line> = lines(r).into_iter().map(Line::from).collect();
    if let Some(title) = text.first_mut() {
        *title = std::mem::take(title).style(Style::default().add_modifier(Modifier::BOLD));
    }
    Paragraph::new(Text::from(text))
}

/// The lines of one screen of the live view (the terminal cuts what does not fit).
pub fn lines(r: &Report) -> Vec<String> {
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
            Coverage::Windowed {
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
        // The heap census: the containers that grow, by name, with the application line that
        // feeds them when the samples say it.
        if let (Some(c), Some(reading)) = (&p.census, &p.census_reading) {
            for (i, k) in c
                .containers
                .iter()
                .enumerate()
                .filter(|(_, k)| k.trend.verdict == crate::verdict::Verdict::Growing)
                .take(3)
            {
                let _ = writeln!(
                    o,
                    "    census: {} ({}) {} items, +{}/min{}",
                    k.name,
                    k.type_name,
                    thousands(k.len),
                    thousands(k.trend.per_min.max(0.0) as u64),
                    match (reading.fed_from(i), k.uses.first()) {
                        (Some(fed), _) => format!(", fed from {}", fed.app_frame),
                        (None, Some(u)) if k.root == "local" => {
                            format!(", in the frame running {u}")
                        }
                        (None, Some(u)) => format!(", used at {u}"),
                        (None, None) => String::new(),
                    }
                );
            }
            // asyncio tasks piling up: how many, and the coroutine most of them wait in.
            if let Some(t) = c
                .tasks
                .as_ref()
                .filter(|t| t.trend.verdict == crate::verdict::Verdict::Growing)
            {
                let _ = writeln!(
                    o,
                    "    asyncio tasks piling up: {} pending, +{}/min{}",
                    thousands(t.pending),
                    thousands(t.trend.per_min.max(0.0) as u64),
                    t.by_coroutine
                        .first()
                        .map(|g| format!(", {} waiting in {}", thousands(g.count), g.coroutine))
                        .unwrap_or_default()
                );
            }
        }
        // Resident memory, part by part (the largest ones and the growing ones).
        if let Some(res) = &p.resident {
            let human = crate::render::summary::human_bytes;
            let shown: Vec<String> = res
                .notable
                .iter()
                .filter_map(|part| res.part(*part))
                .map(|x| {
                    format!(
                        "{} {}{}",
                        x.part.key().replace('_', " "),
                        human(x.bytes),
                        if x.trend.verdict == crate::verdict::Verdict::Growing {
                            format!(" (+{}/min)", human(x.trend.per_min.max(0.0) as u64))
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
            let _ = writeln!(o, "    resident {}: {}", human(res.rss), shown.join(", "));
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
    o.lines().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use ratatui::backend::TestBackend;
    use std::time::Duration;

    #[test]
    fn screen_fits_the_terminal() {
        let mut r = Report {
            mode: Mode::Exact,
            interval: Duration::from_secs(10),
            budget: Some((Duration::from_millis(200), 2.0)),
            elapsed: Duration::from_secs(42),
            started_unix: 0.0,
            min_age: Duration::ZERO,
            procs: vec![],
            health: Default::default(),
            places: Default::default(),
        };
        r.health.alloc_calls = 1234;
        let mut term = ratatui::Terminal::new(TestBackend::new(30, 2)).unwrap();
        term.draw(|f| f.render_widget(view(&r), f.area())).unwrap();
        let buf = term.backend().buffer();
        let row = |y| (0..30).map(|x| buf[(x, y)].symbol()).collect::<String>();
        // The title, cut at the width; the rest of the screen is cut at its height.
        assert_eq!(row(0), "tracer top - 42s - watch mode ");
        assert_eq!(row(1).trim(), "");
        assert!(lines(&r)
            .last()
            .unwrap()
            .starts_with("tracer: 1,234 allocator calls"));
    }
}
