//! Progress of an export or import on standard error: a bar on a terminal (bytes, items, rate,
//! time left), plain lines every few seconds otherwise (a log collector or a CronJob's log
//! gets no escape codes).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{BinaryBytes, HumanCount, HumanDuration, ProgressBar, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when standard error is a terminal, lines otherwise.
    #[default]
    Auto,
    Bar,
    Lines,
    Off,
}

/// How often a plain progress line is printed.
const LINE_INTERVAL: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    what: String,
    started: Instant,
    last_line: Instant,
    bytes: u64,
    items: u64,
    /// Bytes expected in all (an estimate for an export).
    total: Option<u64>,
}

impl Progress {
    pub fn new(what: &str, mode: ProgressMode, total: Option<u64>) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar =
            matches!(mode, ProgressMode::Bar) || (matches!(mode, ProgressMode::Auto) && terminal);
        let lines =
            matches!(mode, ProgressMode::Lines) || (mode == ProgressMode::Auto && !terminal);
        let bar = bar.then(|| {
            let bar = ProgressBar::new(total.unwrap_or(0));
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {msg} \
                 {binary_bytes_per_sec} {eta} left",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(what.to_owned());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            lines,
            what: what.to_owned(),
            started: now,
            last_line: now,
            bytes: 0,
            items: 0,
            total,
        }
    }

    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Count `bytes` and `items` more done.
    pub fn add(&mut self, bytes: u64, items: u64) {
        self.bytes += bytes;
        self.items += items;
        if let Some(bar) = &self.bar {
            // An estimated total may be passed: the bar then grows with the work.
            if self.total.is_some_and(|total| self.bytes > total) {
                bar.set_length(self.bytes);
            }
            bar.set_position(self.bytes);
            bar.set_message(format!("{} items", HumanCount(self.items)));
        }
        if self.lines && self.last_line.elapsed() >= LINE_INTERVAL {
            self.last_line = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    fn line(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.bytes as f64 / elapsed;
        let mut line = format!("{}: {}", self.what, BinaryBytes(self.bytes));
        if let Some(total) = self.total {
            line.push_str(&format!(" of about {}", BinaryBytes(total.max(self.bytes))));
        }
        line.push_str(&format!(
            ", {} items, {}/s",
            HumanCount(self.items),
            BinaryBytes(rate as u64)
        ));
        if let Some(total) = self.total.filter(|_| rate > 0.0) {
            let left = total.saturating_sub(self.bytes) as f64 / rate;
            line.push_str(&format!(
                ", about {} left",
                HumanDuration(Duration::from_secs_f64(left))
            ));
        }
        line
    }

    /// Take the bar off the screen, before the summary line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
