//! Parsers for the small value languages inside the config: durations, cron
//! expressions, names and commands. Each returns a problem as a plain sentence; the
//! caller adds the file and the key.

use std::time::Duration;

/// Parses a duration such as `90s`, `10m`, `36h`, `14d`, `2w`, or a sum of them
/// written without spaces (`1d12h`). Units: `s`, `m` (minutes), `h`, `d`, `w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration: expected a number and a unit s, m, h, d or w \
             (e.g. `90s`, `10m`, `36h`, `14d`, `2w`, or `1d12h`)"
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        let unit_seconds = match rest[digits..].chars().next() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3_600,
            Some('d') => 86_400,
            Some('w') => 604_800,
            _ => return Err(bad()),
        };
        total = number
            .checked_mul(unit_seconds)
            .and_then(|seconds| total.checked_add(seconds))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        rest = &rest[digits + 1..];
    }
    Ok(Duration::from_secs(total))
}

/// A size such as `64GiB`, `500 MB` or `1048576` (bytes); zero is refused.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text.trim().parse().map_err(|_| {
        format!("`{text}` is not a size: expected a number with a unit such as 500MiB or 64GiB")
    })?;
    match size.as_u64() {
        0 => Err("a size must be more than zero".to_owned()),
        bytes => Ok(bytes),
    }
}

/// Turns a cron expression into the 6-field form (seconds first): 5 fields get `0 `
/// in front, 6 fields are kept. The result is checked with the scheduler's own parser
/// (`schedule::parse`), so an expression accepted here is one the scheduler runs.
pub fn normalize_cron(expr: &str) -> Result<String, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let normalized = match fields.len() {
        5 => format!("0 {}", fields.join(" ")),
        6 => fields.join(" "),
        n => {
            return Err(format!(
                "bad cron expression `{expr}`: {n} field{}; expected standard 5-field cron \
                 `m h dom mon dow`, or 6 fields with seconds first",
                if n == 1 { "" } else { "s" }
            ));
        }
    };
    crate::schedule::parse(&normalized).map_err(|e| {
        format!(
            "bad cron expression `{expr}`: {e} (expected standard 5-field cron `m h dom mon dow`, \
             or 6 fields with seconds first)"
        )
    })?;
    Ok(normalized)
}

/// Whether `name` is a valid environment, part or host name:
/// `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`, the rule of every name that becomes part of a
/// store key.
pub(crate) fn is_valid_name(name: &str) -> bool {
    crate::repo::manifest::is_safe_name(name)
}

pub(crate) const NAME_RULE: &str = "names must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}";

/// Checks that a hook or app command splits into words like a shell would split it.
pub(crate) fn check_command(command: &str) -> Result<(), String> {
    match shell_words::split(command) {
        Ok(words) if words.is_empty() => Err("empty command".to_owned()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("cannot split command `{command}` into words: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("14d"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for text in ["", "14", "d", "14x", "1.5h", " 1h", "1h ", "-1h", "1h-"] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("is not a duration"), "{text}: {err}");
        }
        assert!(
            parse_duration("99999999999999999w")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn five_field_cron_gets_seconds() {
        assert_eq!(normalize_cron("0 3 * * *").unwrap(), "0 0 3 * * *");
        assert_eq!(
            normalize_cron("  */5  * * * 1-5 ").unwrap(),
            "0 */5 * * * 1-5"
        );
        assert_eq!(normalize_cron("30 0 3 * * *").unwrap(), "30 0 3 * * *");
        assert_eq!(normalize_cron("0 3 * * MON").unwrap(), "0 0 3 * * MON");
    }

    #[test]
    fn bad_cron_names_the_expected_shape() {
        for expr in ["", "0 3 * *", "0 0 3 * * * 2026"] {
            let err = normalize_cron(expr).unwrap_err();
            assert!(
                err.contains("standard 5-field cron `m h dom mon dow`"),
                "{err}"
            );
            assert!(err.contains("6 fields with seconds first"), "{err}");
        }
        let err = normalize_cron("0 25 * * *").unwrap_err();
        assert!(err.contains("bad cron expression `0 25 * * *`"), "{err}");
        assert!(normalize_cron("61 * * * *").is_err());
        assert!(normalize_cron("* * * * * banana").is_err());
    }

    #[test]
    fn names() {
        for ok in ["live", "a", "test-2", "v1.2_x", &"a".repeat(64)] {
            assert!(is_valid_name(ok), "{ok}");
        }
        for bad in ["", "-live", ".x", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn commands_split_like_a_shell() {
        assert!(check_command("systemctl stop 'my app.service'").is_ok());
        assert!(check_command("   ").unwrap_err().contains("empty"));
        assert!(
            check_command("echo 'unclosed")
                .unwrap_err()
                .contains("cannot split")
        );
    }
}
