//! Small text helpers for human output: sizes, truncation, absent values.

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `1.2 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // Stop where one decimal would round up to 1024.0 of this unit.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `text` cut to at most `max` characters, with `…` marking the cut. Only the first
/// line is kept: a table row must stay one line.
pub fn truncate(text: &str, max: usize) -> String {
    let first_line = text.lines().next().unwrap_or("");
    let cut = first_line.len() < text.trim_end().len();
    if first_line.chars().count() <= max && !cut {
        return first_line.to_owned();
    }
    let kept: String = first_line.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// An optional value, or `-` for a table cell.
pub fn or_dash(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_size(1_288_490_189), "1.2 GiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn truncation_keeps_one_short_line() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("a much longer message", 10), "a much lo…");
        assert_eq!(truncate("first\nsecond", 10), "first…");
        assert_eq!(truncate("ünïcödé ïs fïné", 8), "ünïcödé…");
    }
}
