//! The terminal progress bar every long command shows on stderr. indicatif draws nothing
//! when stderr is not a terminal, so logs and pipes stay clean.

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-counting bar: with a total, bytes of the total, rate and ETA; without one (yet), a
/// spinner with bytes and rate.
pub fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    let bar = match total {
        Some(t) => ProgressBar::new(t).with_style(style()),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                .expect("valid template"),
        ),
    };
    bar.set_message(what.to_string());
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar
}

/// Gives a spinner its total once it is known: it becomes a bar with an ETA.
pub fn set_total(bar: &ProgressBar, total: u64) {
    bar.set_length(total);
    bar.set_style(style());
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
        .expect("valid template")
        .progress_chars("=> ")
}
