//! Targets for what the database modules read from a stored dump: the header of a
//! PostgreSQL custom-format dump, the roles script stored beside it, and the
//! `DEFINER=` clauses of a MariaDB dump.
//!
//! The roles script and the MariaDB dump are run by a server, so their targets check
//! more than "no panic": what the roles filter keeps must be, as PostgreSQL's own
//! lexer sees it, the statement the filter judged; and no definition line leaves the
//! definer filter with a clause still in it.

use std::collections::HashSet;

use envsnap::sources::pg_roles::statements_for_missing;
use envsnap::sources::scratch::{WithoutDefiners, parse_postgres_dump_header, strip_definers};
use tokio::io::AsyncWriteExt;

use super::driver::{DEFAULT_ALLOCATION, DEFAULT_TIME_LIMIT, Outcome, Target};

pub static PG_DUMP_HEADER: Target = Target {
    name: "pg_dump_header",
    run: pg_dump_header,
    dictionary: &[
        b"PGDMP",
        b"\x01\x0e\x00",
        b"\x01\x0f\x00",
        b"\x08",
        b"\x00",
        b"\x01",
    ],
    max_len: 4 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// The header reader a restore drill uses to pick the scratch server's version.
fn pg_dump_header(input: &[u8]) -> Outcome {
    let header = parse_postgres_dump_header(input)?;
    Ok(format!("server {}", header.server_major.min(99)))
}

pub static PG_ROLES: Target = Target {
    name: "pg_roles",
    run: pg_roles,
    dictionary: &[
        b"CREATE ROLE ",
        b"ALTER ROLE ",
        b" WITH ",
        b"COMMENT ON ROLE ",
        b" IS ",
        b"GRANT ",
        b" TO ",
        b" GRANTED BY ",
        b"SUPERUSER",
        b"LOGIN",
        b"PASSWORD",
        b"postgres",
        b"app",
        b"PUBLIC",
        b";",
        b"'",
        b"\"",
        b"--",
        b"\n",
        b"\r",
        b"\\",
        b"$$",
        b"/*",
        b"*/",
        b"E'",
    ],
    max_len: 16 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// Roles the target server already has.
const EXISTING: &[&str] = &[
    "postgres",
    "pg_execute_server_program",
    "pg_read_server_files",
];

/// `pg_roles::statements_for_missing`. Each kept statement, with its comments removed
/// the way PostgreSQL removes them, must be one statement (its `;` last), and the
/// filter must keep all of them again when given them in that form: what the server
/// runs is what the filter approved. (A last statement with an open quote makes the
/// server refuse the whole batch, so then nothing runs.)
fn pg_roles(input: &[u8]) -> Outcome {
    let script = String::from_utf8_lossy(input);
    let existing: HashSet<String> = EXISTING.iter().map(|r| r.to_string()).collect();
    let kept = statements_for_missing(&script, &existing).map_err(|e| e.to_string())?;
    let as_run: Vec<String> = kept.iter().map(|s| without_comments(s)).collect();
    let mut unterminated = false;
    for (n, statement) in as_run.iter().enumerate() {
        let (ends, open_quote) = top_level_semicolons(statement);
        // The filter's splitter runs an open quote to the end of the script.
        assert!(
            !open_quote || n == as_run.len() - 1,
            "an open quote before the end"
        );
        unterminated |= open_quote;
        // Without its `;`, a statement must end in an open quote (the server refuses it).
        let one = match ends[..] {
            [at] => at == statement.len() - 1,
            [] => open_quote,
            _ => false,
        };
        assert!(
            one,
            "a kept statement is not one statement to PostgreSQL: {statement:?}"
        );
    }
    if unterminated {
        // The server refuses the batch (it runs in one transaction): nothing runs.
        return Ok(format!("{} kept, the last unterminated", kept.len().min(9)));
    }
    let again = statements_for_missing(&as_run.join("\n"), &existing)
        .expect("kept statements are kept again");
    assert_eq!(
        again.len(),
        kept.len(),
        "the server would run other statements than the filter kept: {kept:?}"
    );
    let mut kinds: Vec<&str> = kept
        .iter()
        .map(|s| s.split_whitespace().next().unwrap_or(""))
        .collect();
    kinds.sort();
    kinds.dedup();
    Ok(format!("{} kept: {}", kept.len().min(9), kinds.join(" ")))
}

/// `statement` without its `--` comments as PostgreSQL's lexer (and psql's) reads
/// it: a comment runs to the next `\n` or `\r`; quotes are `'` and `"`, doubled to
/// escape (kept statements hold no backslash, `$` or block comment).
fn without_comments(statement: &str) -> String {
    let bytes = statement.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                let (end, _) = quoted_end(bytes, i, quote);
                out.extend_from_slice(&bytes[i..end]);
                i = end;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).expect("cut at ASCII bytes only")
}

/// Where the quoted text that starts at `open` ends, and whether it is closed.
fn quoted_end(bytes: &[u8], open: usize, quote: u8) -> (usize, bool) {
    let mut i = open + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return (i + 1, true);
        }
        i += 1;
    }
    (bytes.len(), false)
}

/// Where `;` ends a statement in comment-free SQL (outside quotes), and whether the
/// text ends inside a quote.
fn top_level_semicolons(sql: &str) -> (Vec<usize>, bool) {
    let bytes = sql.as_bytes();
    let mut found = Vec::new();
    let mut open_quote = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                let (end, closed) = quoted_end(bytes, i, quote);
                open_quote = !closed;
                i = end;
            }
            b';' => {
                found.push(i);
                i += 1;
            }
            _ => i += 1,
        }
    }
    (found, open_quote)
}

pub static MARIADB_DEFINERS: Target = Target {
    name: "mariadb_definers",
    run: mariadb_definers,
    dictionary: &[
        b"DEFINER",
        b"=",
        b"`",
        b"'",
        b"\"",
        b"@",
        b"\\",
        b"CREATE ",
        b"/*!50003 ",
        b"/*!50013 ",
        b"*/",
        b"\n",
        b" ",
        b"root",
        b"localhost",
        b"%",
        b"INSERT INTO t VALUES (",
    ],
    max_len: 32 << 10,
    allocation: DEFAULT_ALLOCATION,
    time_limit: DEFAULT_TIME_LIMIT,
};

/// The drill's definer filter, fed the input in pieces: line for line, data passes
/// unchanged and no definition comes out with a `DEFINER=` clause left in it.
fn mariadb_definers(input: &[u8]) -> Outcome {
    let mut out = Vec::new();
    futures::executor::block_on(async {
        let mut filter = WithoutDefiners::new(&mut out);
        let piece = 1 + input.first().map_or(0, |b| usize::from(*b) % 97);
        for chunk in input.chunks(piece) {
            filter.write_all(chunk).await.unwrap();
        }
        filter.shutdown().await.unwrap();
    });
    let lines_in: Vec<&[u8]> = input.split_inclusive(|b| *b == b'\n').collect();
    let lines_out: Vec<&[u8]> = out.split_inclusive(|b| *b == b'\n').collect();
    let newlines = |bytes: &[u8]| bytes.iter().filter(|b| **b == b'\n').count();
    assert_eq!(
        newlines(input),
        newlines(&out),
        "lines were joined or split"
    );
    let mut definitions = 0;
    for (line_in, line_out) in lines_in.iter().zip(&lines_out) {
        if !is_definition(line_in) {
            assert_eq!(line_in, line_out, "a data line changed");
            continue;
        }
        definitions += 1;
        if line_in.len() < MAX_LINE {
            assert_eq!(
                String::from_utf8_lossy(&strip_definers(line_out)),
                String::from_utf8_lossy(line_out),
                "a definition kept a DEFINER clause"
            );
        }
    }
    let clauses = |bytes: &[u8]| {
        bytes
            .windows(7)
            .filter(|w| w.eq_ignore_ascii_case(b"DEFINER"))
            .count()
    };
    let removed = clauses(input).saturating_sub(clauses(&out));
    Ok(format!(
        "{} definitions, {} clauses removed",
        definitions.min(9),
        removed.min(9)
    ))
}

/// Longer definitions pass as they are (`definers.rs`).
const MAX_LINE: usize = 64 * 1024;

/// The filter's rule, whole-line: after white space and an optional versioned
/// comment opener (`/*!50013`), the line says `CREATE` or `DEFINER`.
fn is_definition(line: &[u8]) -> bool {
    let line = line.trim_ascii_start();
    let line = match line.strip_prefix(b"/*!") {
        Some(rest) => {
            let rest = rest.trim_ascii_start();
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            rest[digits..].trim_ascii_start()
        }
        None => line,
    };
    let starts =
        |word: &[u8]| line.len() >= word.len() && line[..word.len()].eq_ignore_ascii_case(word);
    starts(b"CREATE") || starts(b"DEFINER")
}
