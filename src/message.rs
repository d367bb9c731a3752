//! Messages for people: every error line the daemon sends or records is one line of
//! printable text.
//!
//! Errors often quote their input (an archive entry's name, a tool's stderr, a
//! value from the config), and input is hostile: a newline in it would forge a
//! second line in a log or a terminal, a control character would drive the terminal
//! that prints it. [`one_line`] is applied where messages leave the daemon (error
//! replies) and where they are kept (job errors, activity details).

/// `text` as one line: line breaks and tabs become spaces, other control characters
/// are shown as `\u{..}` escapes, and trailing whitespace goes.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.trim_end().chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// A span of seconds for people: `3d 4h`, `2h 5m`, `42s`.
pub fn human_duration(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {}s", seconds % 60),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn input_quoted_in_a_message_cannot_break_or_drive_the_line() {
        assert_eq!(
            one_line("entry a\nFAKE LINE\u{1b}[2J\tx\0 \n"),
            "entry a FAKE LINE\\u{1b}[2J x\\u{0}"
        );
        assert_eq!(one_line("plain, unchanged: ü"), "plain, unchanged: ü");
    }
}
