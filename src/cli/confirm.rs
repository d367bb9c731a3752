//! Confirmation of destructive commands: the person types the name of what goes.
//!
//! Only on a terminal: a script must say `--yes`, so a missing flag never leaves a
//! script waiting on input that does not come.

use std::io::{BufRead, IsTerminal, Write};

use super::error::CliError;

/// Asks on stderr for `expected` (a `noun`: "backup name", "environment name") to be
/// typed on stdin; refuses when stdin is not a terminal or the answer differs. `what`
/// names the action in messages ("delete backup before-upgrade of live").
pub fn require_typed_name(expected: &str, noun: &str, what: &str) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::NotConfirmed(format!(
            "refusing to {what} without confirmation: pass --yes"
        )));
    }
    let stdin = std::io::stdin();
    confirm(
        expected,
        noun,
        what,
        &mut stdin.lock(),
        &mut std::io::stderr(),
    )
}

fn confirm(
    expected: &str,
    noun: &str,
    what: &str,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> Result<(), CliError> {
    write!(output, "To {what}, type the {noun} ({expected}): ")?;
    output.flush()?;
    let mut answer = String::new();
    input.read_line(&mut answer)?;
    if answer.trim_end_matches(['\n', '\r']) == expected {
        Ok(())
    } else {
        Err(CliError::NotConfirmed(format!(
            "the name typed does not match; did not {what}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_name_confirms() {
        let mut prompt = Vec::new();
        confirm(
            "b1",
            "backup name",
            "delete backup b1 of live",
            &mut &b"b1\n"[..],
            &mut prompt,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(prompt).unwrap(),
            "To delete backup b1 of live, type the backup name (b1): "
        );
        for answer in [&b"b2\n"[..], b"", b" b1\n", b"B1\n"] {
            let error = confirm(
                "b1",
                "backup name",
                "delete backup b1 of live",
                &mut &answer[..],
                &mut Vec::new(),
            )
            .unwrap_err();
            assert_eq!(
                error.to_string(),
                "the name typed does not match; did not delete backup b1 of live"
            );
        }
    }
}
