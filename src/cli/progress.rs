//! The progress bar of `backup create --wait` and `job watch`, drawn on stderr.
//!
//! The bar counts parts; the message shows bytes done, the job's average rate and the
//! part being worked on. There is no ETA: progress events carry no byte total, and
//! parts differ too much in size for a part-based estimate to be honest.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::text::human_size;
use crate::control::protocol::{JobState, Progress};

pub struct ProgressDisplay {
    bar: ProgressBar,
    /// Whether the bar has switched from the waiting spinner to counting parts.
    counting: std::cell::Cell<bool>,
}

impl ProgressDisplay {
    /// A bar on stderr when it is a terminal, else None (quiet in scripts and logs).
    pub fn on_terminal() -> Option<Self> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
            .with_style(style("{spinner} {msg}  {elapsed}"));
        bar.set_message("waiting for the daemon");
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(ProgressDisplay {
            bar,
            counting: false.into(),
        })
    }

    pub fn update(&self, progress: &Progress) {
        // Until the job knows its parts, a bar would only show 0/0.
        if progress.parts_total > 0 && !self.counting.replace(true) {
            self.bar.set_style(style(
                "{spinner} [{bar:25}] {pos}/{len} parts  {msg}  {elapsed}",
            ));
        }
        self.bar.set_length(u64::from(progress.parts_total));
        self.bar.set_position(u64::from(progress.parts_done));
        self.bar.set_message(message(progress));
    }

    /// Removes the bar, so the result that follows starts on a clean line.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("the templates are valid")
        .progress_chars("=> ")
}

fn message(progress: &Progress) -> String {
    if progress.state == JobState::Queued {
        return format!("job {} queued", progress.job);
    }
    let mut text = format!(
        "{}  {}/s",
        human_size(progress.bytes_done),
        human_size(progress.rate)
    );
    if let Some(limit) = progress.limit {
        text.push_str(&format!(" (limit {}/s)", human_size(limit)));
    }
    if !progress.part.is_empty() {
        text.push_str("  ");
        text.push_str(&progress.part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_shows_bytes_rate_and_part() {
        let mut progress = Progress {
            job: 3,
            state: JobState::Running,
            bytes_done: 3 << 20,
            parts_done: 1,
            parts_total: 3,
            part: "database:main".into(),
            rate: 1 << 20,
            limit: None,
        };
        assert_eq!(message(&progress), "3.0 MiB  1.0 MiB/s  database:main");
        progress.limit = Some(5 << 20);
        assert_eq!(
            message(&progress),
            "3.0 MiB  1.0 MiB/s (limit 5.0 MiB/s)  database:main"
        );
        progress.state = JobState::Queued;
        assert_eq!(message(&progress), "job 3 queued");
    }
}
