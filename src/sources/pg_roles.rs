//! The roles a PostgreSQL database needs, carried beside its dump.
//!
//! Roles are cluster-wide: `pg_dump` records ownership and grants by role name but not
//! the roles themselves, so a backup also stores `pg_dumpall --roles-only
//! --no-role-passwords` (readable without superuser rights; passwords are never
//! stored) as the part's `roles` companion, a plain SQL script.
//!
//! A restore creates only the roles the target server lacks; roles that exist are
//! left exactly as they are (another database on the server may rely on them). The
//! script comes from the store, so it is hostile until checked: this module picks
//! statements out of it (splitting outside string literals, quoted identifiers and
//! comments) and keeps only these, about roles the script itself creates:
//!
//! - `CREATE ROLE name`, for a name the server lacks (never `PUBLIC`, `ALL`, ...);
//! - `ALTER ROLE name WITH ...` whose options are all harmless (login, inherit,
//!   createdb, createrole, connection limit, valid until, and the `NO` forms): a
//!   restore never grants superuser, replication or bypassrls, nor sets a password;
//! - `COMMENT ON ROLE name IS '...'`;
//! - `GRANT role, ... TO role, ...` where every role named was created by the script:
//!   memberships in roles that already exist (which could lead to a superuser by `SET
//!   ROLE`) are not restored.
//!
//! Per-role settings (`ALTER ROLE ... SET`) and everything else are left out. A kept
//! statement holding a backslash (a psql meta-command, an escape string), a `$`
//! (dollar quoting) or a block comment refuses the whole script: pg_dumpall writes
//! none there, and each could hide a statement from this splitter.

use std::collections::HashSet;

/// Role names that are not roles.
const RESERVED: &[&str] = &[
    "PUBLIC",
    "ALL",
    "CURRENT_USER",
    "SESSION_USER",
    "CURRENT_ROLE",
    "NONE",
];

/// Options an `ALTER ROLE ... WITH` may carry to be kept (besides numbers and
/// literals for `CONNECTION LIMIT` and `VALID UNTIL`).
const HARMLESS: &[&str] = &[
    "LOGIN",
    "NOLOGIN",
    "INHERIT",
    "NOINHERIT",
    "CREATEDB",
    "NOCREATEDB",
    "CREATEROLE",
    "NOCREATEROLE",
    "NOSUPERUSER",
    "NOREPLICATION",
    "NOBYPASSRLS",
    "CONNECTION",
    "LIMIT",
    "VALID",
    "UNTIL",
];

/// A statement the restore would keep holds something pg_dumpall never writes there,
/// so the script is not run at all.
#[derive(Debug, thiserror::Error)]
#[error(
    "the roles script holds a backslash, a $ or a block comment where pg_dumpall writes none; it was not run"
)]
pub struct UnsafeRolesScript;

/// The statements of `script` that create the roles not in `existing`, in script
/// order; an error if a kept statement is not as pg_dumpall writes them.
pub fn statements_for_missing(
    script: &str,
    existing: &HashSet<String>,
) -> Result<Vec<String>, UnsafeRolesScript> {
    let statements = split_statements(script);
    let created: HashSet<String> = statements
        .iter()
        .filter_map(|statement| match &words(statement)[..] {
            [create, role, Word::Name { text, .. }]
                if create.is_keyword("CREATE") && role.is_keyword("ROLE") =>
            {
                let creatable = !existing.contains(text)
                    && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(text));
                creatable.then(|| text.clone())
            }
            _ => None,
        })
        .collect();
    let is_created =
        |word: &Word| matches!(word, Word::Name { text, .. } if created.contains(text));
    let mut kept = Vec::new();
    for statement in statements {
        let words = words(statement);
        let keyword =
            |i: usize, expected: &str| words.get(i).is_some_and(|w| w.is_keyword(expected));
        let keep = if keyword(0, "CREATE") && keyword(1, "ROLE") {
            words.len() == 3 && is_created(&words[2])
        } else if keyword(0, "ALTER") && keyword(1, "ROLE") && keyword(3, "WITH") {
            is_created(&words[2])
                && words[4..].iter().all(|w| match w {
                    Word::Name {
                        text,
                        quoted: false,
                    } => {
                        HARMLESS.iter().any(|h| h.eq_ignore_ascii_case(text))
                            || text.bytes().all(|b| b.is_ascii_digit())
                    }
                    Word::Name { quoted: true, .. } => false,
                    Word::Other => true,
                })
        } else if keyword(0, "COMMENT") && keyword(1, "ON") && keyword(2, "ROLE") {
            words.get(3).is_some_and(is_created) && keyword(4, "IS")
        } else if keyword(0, "GRANT") {
            let end = words
                .iter()
                .position(|w| w.is_keyword("WITH") || w.is_keyword("GRANTED"))
                .unwrap_or(words.len());
            match words[..end].iter().position(|w| w.is_keyword("TO")) {
                Some(to) => {
                    let named = words[1..to].iter().chain(&words[to + 1..end]);
                    to > 1 && to + 1 < end && named.into_iter().all(is_created)
                }
                None => false,
            }
        } else {
            false
        };
        if keep {
            if statement.contains('\\') || statement.contains('$') || statement.contains("/*") {
                return Err(UnsafeRolesScript);
            }
            let statement = statement.trim();
            // A `;` after a trailing comment would be part of the comment.
            let end = if ends_in_comment(statement) {
                "\n;"
            } else {
                ";"
            };
            kept.push(format!("{statement}{end}"));
        }
    }
    Ok(kept)
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
                    .position(is_newline)
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

/// Whether `statement` ends inside a `--` comment.
fn ends_in_comment(statement: &str) -> bool {
    let bytes = statement.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => i = end_of_quoted(bytes, i, quote),
            b'-' if bytes.get(i + 1) == Some(&b'-') => match bytes[i..].iter().position(is_newline)
            {
                Some(n) => i += n + 1,
                None => return true,
            },
            _ => i += 1,
        }
    }
    false
}

/// Where a `--` comment ends. PostgreSQL's lexer (and psql's) ends it at `\r` as
/// well as `\n`: ending it only at `\n` let a kept statement hide another one, or a
/// `SUPERUSER`, behind a `\r` (found with the `pg_roles` fuzz target's check).
fn is_newline(byte: &u8) -> bool {
    matches!(byte, b'\n' | b'\r')
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
    Name { text: String, quoted: bool },
    Other,
}

impl Word {
    /// Whether this is the bare keyword `expected` (a quoted identifier never is).
    fn is_keyword(&self, expected: &str) -> bool {
        matches!(self, Word::Name { text, quoted: false } if text.eq_ignore_ascii_case(expected))
    }
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
                .position(is_newline)
                .map_or(bytes.len(), |n| i + n);
        } else if b == b'"' {
            let end = end_of_quoted(bytes, i, b'"');
            let terminated = end - 1 > i && bytes[end - 1] == b'"';
            let inner = &statement[i + 1..if terminated { end - 1 } else { end }];
            words.push(Word::Name {
                text: inner.replace("\"\"", "\""),
                quoted: true,
            });
            i = end;
        } else if b == b'\'' {
            words.push(Word::Other);
            i = end_of_quoted(bytes, i, b'\'');
        } else if b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80 {
            let n = bytes[i..]
                .iter()
                .position(|&c| !(c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80))
                .unwrap_or(bytes.len() - i);
            words.push(Word::Name {
                text: statement[i..i + n].to_owned(),
                quoted: false,
            });
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
    fn only_missing_roles_are_created_and_only_harmlessly() {
        let existing = HashSet::from(["postgres".to_owned()]);
        let statements = statements_for_missing(SCRIPT, &existing).unwrap();
        assert_eq!(
            statements,
            [
                "CREATE ROLE app;",
                "ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;",
                "CREATE ROLE \"Odd \"\"one\"\"; x\";",
                "ALTER ROLE \"Odd \"\"one\"\"; x\" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;",
                "COMMENT ON ROLE \"Odd \"\"one\"\"; x\" IS 'a role; with a semicolon -- and no comment';",
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
        assert!(
            statements_for_missing(SCRIPT, &existing)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_hostile_script_gains_nothing() {
        let none = HashSet::new();
        let script = "CREATE ROLE boss;
ALTER ROLE boss WITH SUPERUSER LOGIN;
ALTER ROLE boss WITH LOGIN PASSWORD 'x';
ALTER ROLE boss SET session_preload_libraries TO 'evil';
GRANT postgres TO boss;
GRANT pg_execute_server_program TO boss;
CREATE ROLE public;
GRANT boss TO PUBLIC;
SET a = b;
";
        let existing = HashSet::from([
            "postgres".to_owned(),
            "pg_execute_server_program".to_owned(),
        ]);
        assert_eq!(
            statements_for_missing(script, &existing).unwrap(),
            ["CREATE ROLE boss;"]
        );
        for hidden in [
            "CREATE ROLE a; COMMENT ON ROLE a IS E'\\'' ; DROP DATABASE prod; --';",
            "CREATE ROLE a; COMMENT ON ROLE a IS 'x' \\! id",
            "CREATE ROLE a; COMMENT ON ROLE a IS $$x$$;",
        ] {
            assert!(statements_for_missing(hidden, &none).is_err(), "{hidden}");
        }
        // A comment ends at a carriage return for PostgreSQL: what follows it is code.
        let behind_cr = "CREATE ROLE a;
ALTER ROLE a WITH LOGIN --\rSUPERUSER
;
COMMENT ON ROLE a IS 'x' --\r; GRANT pg_execute_server_program TO a; --
;";
        assert_eq!(
            statements_for_missing(behind_cr, &existing).unwrap(),
            ["CREATE ROLE a;", "COMMENT ON ROLE a IS 'x' --\n;"]
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
            "GRANT TO",
        ] {
            let _ = statements_for_missing(script, &HashSet::new());
        }
        assert_eq!(
            statements_for_missing("CREATE ROLE \"open", &HashSet::new()).unwrap(),
            ["CREATE ROLE \"open;"]
        );
    }
}
