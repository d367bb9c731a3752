//! The roles a PostgreSQL database needs, carried beside its dump.
//!
//! Roles are cluster-wide: `pg_dump` records ownership and grants by role name but not
//! the roles themselves, so a backup also stores `pg_dumpall --roles-only
//! --no-role-passwords` (readable without superuser rights; passwords are never
//! stored) as the part's `roles` companion, a plain SQL script.
//!
//! A restore creates only the roles the target server lacks, with their attributes,
//! settings, comments and memberships from the script; roles that exist are left
//! exactly as they are (another database on the server may rely on them). This module
//! picks those statements out of the script: it splits it into statements (outside
//! string literals, quoted identifiers and comments) and keeps the ones about a
//! missing role. Everything else in the script is left out.

use std::collections::HashSet;

/// The statements of `script` that create the roles not in `existing`, in script
/// order: `CREATE ROLE`, `ALTER ROLE` (attributes and settings, but not settings for
/// one database, which may not exist), `COMMENT ON ROLE`, and `GRANT ... TO` the new
/// role (memberships and parameter privileges). Session `SET`s are kept.
pub fn statements_for_missing(script: &str, existing: &HashSet<String>) -> Vec<String> {
    let missing =
        |role: Option<&Word>| matches!(role, Some(Word::Name(name)) if !existing.contains(name));
    split_statements(script)
        .into_iter()
        .filter(|statement| {
            let words = words(statement);
            let keyword = |i: usize, expected: &str| {
                matches!(words.get(i), Some(Word::Name(w)) if w.eq_ignore_ascii_case(expected))
            };
            if keyword(0, "SET") {
                true
            } else if keyword(0, "CREATE") && keyword(1, "ROLE") {
                missing(words.get(2))
            } else if keyword(0, "ALTER") && keyword(1, "ROLE") {
                missing(words.get(2)) && !(keyword(3, "IN") && keyword(4, "DATABASE"))
            } else if keyword(0, "COMMENT") && keyword(1, "ON") && keyword(2, "ROLE") {
                missing(words.get(3))
            } else if keyword(0, "GRANT") {
                let to = words
                    .iter()
                    .position(|w| matches!(w, Word::Name(n) if n.eq_ignore_ascii_case("TO")));
                to.is_some_and(|i| missing(words.get(i + 1)))
            } else {
                false
            }
        })
        .map(|statement| format!("{};", statement.trim()))
        .collect()
}

/// The statements of an SQL script, without their `;` and the comments before them,
/// skipping empty ones. A `;` inside a string literal, a quoted identifier or a
/// comment does not end one.
fn split_statements(script: &str) -> Vec<&str> {
    let bytes = script.as_bytes();
    let mut statements = Vec::new();
    let (mut start, mut i) = (None, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |n| i + n + 1);
                continue;
            }
            b';' => {
                statements.extend(start.take().map(|s| &script[s..i]));
                i += 1;
                continue;
            }
            b if b.is_ascii_whitespace() => {}
            _ => {
                start.get_or_insert(i);
            }
        }
        i = match bytes[i] {
            quote @ (b'\'' | b'"') => end_of_quoted(bytes, i, quote),
            _ => i + 1,
        };
    }
    statements.extend(start.map(|s| &script[s..]));
    statements
}

/// The index just past the quoted text starting at `open` (a doubled quote is an
/// escaped one); the end of `bytes` if it is unterminated.
fn end_of_quoted(bytes: &[u8], open: usize, quote: u8) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// A word of a statement: a name (a bare word as written, or a quoted identifier
/// unquoted) or anything else (literals, punctuation).
#[derive(Debug, PartialEq)]
enum Word {
    Name(String),
    Other,
}

fn words(statement: &str) -> Vec<Word> {
    let bytes = statement.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() || b == b',' {
            i += 1;
        } else if b == b'-' && bytes.get(i + 1) == Some(&b'-') {
            i = bytes[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |n| i + n);
        } else if b == b'"' {
            let end = end_of_quoted(bytes, i, b'"');
            let terminated = end - 1 > i && bytes[end - 1] == b'"';
            let inner = &statement[i + 1..if terminated { end - 1 } else { end }];
            words.push(Word::Name(inner.replace("\"\"", "\"")));
            i = end;
        } else if b == b'\'' {
            words.push(Word::Other);
            i = end_of_quoted(bytes, i, b'\'');
        } else if b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 {
            let n = bytes[i..]
                .iter()
                .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80))
                .unwrap_or(bytes.len() - i);
            words.push(Word::Name(statement[i..i + n].to_owned()));
            i += n;
        } else {
            words.push(Word::Other);
            i += 1;
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape `pg_dumpall --roles-only --no-role-passwords` prints (PostgreSQL 15).
    const SCRIPT: &str = r#"--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;

SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;

--
-- Roles
--

CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "Odd ""one""; x";
ALTER ROLE "Odd ""one""; x" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
COMMENT ON ROLE "Odd ""one""; x" IS 'a role; with a semicolon -- and no comment';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
ALTER ROLE app SET search_path TO 'shop', 'public';
ALTER ROLE app IN DATABASE other SET work_mem TO '64MB';

--
-- Role memberships
--

GRANT "Odd ""one""; x" TO app GRANTED BY postgres;
GRANT app TO postgres GRANTED BY postgres;

--
-- PostgreSQL database cluster dump complete
--
"#;

    #[test]
    fn only_missing_roles_are_created() {
        let existing = HashSet::from(["postgres".to_owned()]);
        let statements = statements_for_missing(SCRIPT, &existing);
        assert_eq!(
            statements,
            [
                "SET default_transaction_read_only = off;",
                "SET client_encoding = 'UTF8';",
                "SET standard_conforming_strings = on;",
                "CREATE ROLE app;",
                "ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;",
                "CREATE ROLE \"Odd \"\"one\"\"; x\";",
                "ALTER ROLE \"Odd \"\"one\"\"; x\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;",
                "COMMENT ON ROLE \"Odd \"\"one\"\"; x\" IS 'a role; with a semicolon -- and no comment';",
                "ALTER ROLE app SET search_path TO 'shop', 'public';",
                "GRANT \"Odd \"\"one\"\"; x\" TO app GRANTED BY postgres;",
            ]
        );
    }

    #[test]
    fn nothing_is_created_when_every_role_exists() {
        let existing: HashSet<String> = ["postgres", "app", "Odd \"one\"; x"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        let statements = statements_for_missing(SCRIPT, &existing);
        assert!(
            statements.iter().all(|s| s.starts_with("SET ")),
            "{statements:?}"
        );
    }

    #[test]
    fn unterminated_quotes_and_garbage_do_not_panic() {
        for script in [
            "CREATE ROLE \"open",
            "'",
            "--",
            "GRANT x TO",
            ";;;",
            "CREATE ROLE",
        ] {
            let _ = statements_for_missing(script, &HashSet::new());
        }
        assert_eq!(
            statements_for_missing("CREATE ROLE \"open", &HashSet::new()),
            ["CREATE ROLE \"open;"]
        );
    }
}
