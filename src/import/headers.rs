//! A guard in front of the tar crate: extension headers are refused over a limit
//! before the tar crate reads them.
//!
//! The tar crate reads a PAX extended header (`x`, `g`) or a GNU long name or link
//! (`L`, `K`) whole into memory before the import sees the entry it belongs to: a few
//! kilobytes of zstd can claim gigabytes there. This reader passes the archive's bytes
//! through unchanged while following its 512-byte blocks: each header's size (the
//! octal or base-256 field, or the size a PAX header set for the next entry), GNU
//! sparse extension blocks, and the padding to the next block. An extension entry
//! larger than [`MAX_EXTENSION`] fails the read at its header. Anything it cannot
//! follow (a header it cannot parse) ends the guarding and leaves the judgement to
//! the tar crate, which refuses a corrupt archive itself.

use std::io::{self, Read};

/// The most an extension entry may hold: paths and xattrs are far smaller.
pub const MAX_EXTENSION: u64 = 1 << 20;
const BLOCK: usize = 512;

enum State {
    /// Reading a header block.
    Header { block: Box<[u8; BLOCK]>, got: usize },
    /// Reading a GNU sparse header's extension block.
    SparseExtension {
        block: Box<[u8; BLOCK]>,
        got: usize,
        body: u64,
    },
    /// Passing an entry's body and padding; a PAX header's body is kept to read a
    /// `size` record for the next entry.
    Body {
        left: u64,
        size: u64,
        pax: Option<Vec<u8>>,
    },
    /// Not following any more.
    Off,
}

pub struct ExtensionGuard<R> {
    inner: R,
    state: State,
    /// The size a PAX header set for the next entry.
    next_size: Option<u64>,
}

impl<R: Read> ExtensionGuard<R> {
    pub fn new(inner: R) -> Self {
        ExtensionGuard {
            inner,
            state: header_state(),
            next_size: None,
        }
    }

    fn follow(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let state = std::mem::replace(&mut self.state, State::Off);
            let (taken, next) = self.step(state, bytes)?;
            self.state = next;
            bytes = &bytes[taken..];
            if matches!(self.state, State::Off) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Consumes a prefix of `bytes` in `state`; returns how much and the next state.
    fn step(&mut self, state: State, bytes: &[u8]) -> io::Result<(usize, State)> {
        Ok(match state {
            State::Header { mut block, got } => {
                let n = (BLOCK - got).min(bytes.len());
                block[got..got + n].copy_from_slice(&bytes[..n]);
                match got + n == BLOCK {
                    true => (n, self.after_header(&block)?),
                    false => (
                        n,
                        State::Header {
                            block,
                            got: got + n,
                        },
                    ),
                }
            }
            State::SparseExtension {
                mut block,
                got,
                body,
            } => {
                let n = (BLOCK - got).min(bytes.len());
                block[got..got + n].copy_from_slice(&bytes[..n]);
                let next = match (got + n == BLOCK, block[504] != 0) {
                    (false, _) => State::SparseExtension {
                        block,
                        got: got + n,
                        body,
                    },
                    (true, true) => sparse_state(body),
                    (true, false) => body_state(body, None),
                };
                (n, next)
            }
            State::Body {
                left,
                size,
                mut pax,
            } => {
                let n = left.min(bytes.len() as u64) as usize;
                if let Some(kept) = &mut pax {
                    let want = (size as usize).saturating_sub(kept.len()).min(n);
                    kept.extend_from_slice(&bytes[..want]);
                }
                match left - n as u64 {
                    0 => {
                        if let Some(kept) = pax {
                            self.next_size = pax_size(&kept);
                        }
                        (n, header_state())
                    }
                    left => (n, State::Body { left, size, pax }),
                }
            }
            State::Off => (bytes.len(), State::Off),
        })
    }

    fn after_header(&mut self, block: &[u8; BLOCK]) -> io::Result<State> {
        if block.iter().all(|&b| b == 0) {
            return Ok(header_state()); // end-of-archive blocks
        }
        let Some(field) = header_size(&block[124..136]) else {
            return Ok(State::Off);
        };
        let kind = block[156];
        if matches!(kind, b'x' | b'g' | b'L' | b'K') {
            if field > MAX_EXTENSION {
                return Err(io::Error::other(format!(
                    "the archive has an extended header of {field} bytes, more than {MAX_EXTENSION}"
                )));
            }
            let keep = (kind == b'x').then(Vec::new);
            return Ok(body_state(field, keep));
        }
        let size = self.next_size.take().unwrap_or(field);
        Ok(match (kind, block[482] != 0) {
            (b'S', true) => sparse_state(size),
            _ => body_state(size, None),
        })
    }
}

impl<R: Read> Read for ExtensionGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.follow(&buf[..n])?;
        Ok(n)
    }
}

fn header_state() -> State {
    State::Header {
        block: Box::new([0; BLOCK]),
        got: 0,
    }
}

fn sparse_state(body: u64) -> State {
    State::SparseExtension {
        block: Box::new([0; BLOCK]),
        got: 0,
        body,
    }
}

/// An entry's body of `size` bytes and its padding to the next block.
fn body_state(size: u64, pax: Option<Vec<u8>>) -> State {
    match size.div_ceil(BLOCK as u64) * BLOCK as u64 {
        0 => header_state(),
        left => State::Body { left, size, pax },
    }
}

/// A header's size field: octal digits (spaces and NULs around them), or base-256
/// when its first byte has the high bit set.
fn header_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = 0;
        for &b in &field[1..] {
            value = value.checked_mul(256)?.checked_add(b.into())?;
        }
        return Some(value);
    }
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == ' ' || c == '\0');
    match digits {
        "" => Some(0),
        digits => u64::from_str_radix(digits, 8).ok(),
    }
}

/// The `size` record of a PAX header's records (`LEN key=value\n`), if any.
fn pax_size(records: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(records);
    text.lines()
        .filter_map(|line| line.split_once(' ').map(|(_, record)| record))
        .filter_map(|record| record.strip_prefix("size="))
        .next_back()
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, usize)], long_names: bool) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, size) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(*size as u64);
            header.set_mode(0o644);
            header.set_cksum();
            let data = vec![7u8; *size];
            match long_names {
                true => builder
                    .append_data(
                        &mut header,
                        format!("{}/{name}", "d".repeat(200)),
                        &data[..],
                    )
                    .unwrap(),
                false => builder.append_data(&mut header, name, &data[..]).unwrap(),
            }
        }
        builder.into_inner().unwrap()
    }

    fn read_all(bytes: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut guard = ExtensionGuard::new(bytes);
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        loop {
            match guard.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn a_good_archive_passes_unchanged_in_any_chunking() {
        let bytes = archive(&[("a", 10), ("b", 5000), ("c", 0), ("d", 512)], true);
        for chunk in [1, 7, 512, 4096] {
            assert_eq!(read_all(&bytes, chunk).unwrap(), bytes);
        }
    }

    #[test]
    fn an_oversized_long_name_is_refused_at_its_header() {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(8 << 30);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&[b'a'; 4096]);
        let error = read_all(&bytes, 4096).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the archive has an extended header of 8589934592 bytes, more than 1048576"
        );
    }

    #[test]
    fn a_pax_size_record_moves_the_next_header() {
        let mut builder = tar::Builder::new(Vec::new());
        // A PAX header whose size record the next entry's header field contradicts.
        let records = b"12 size=600\n";
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_size(records.len() as u64);
        pax.set_cksum();
        builder.append(&pax, &records[..]).unwrap();
        let mut file = tar::Header::new_ustar();
        file.set_path("f").unwrap();
        file.set_size(600);
        file.set_cksum();
        builder.append(&file, &[1u8; 600][..]).unwrap();
        let mut long = tar::Header::new_gnu();
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_size(2 << 20);
        long.set_cksum();
        builder.append(&long, &vec![b'a'; 2 << 20][..]).unwrap();
        let bytes = builder.into_inner().unwrap();
        let error = read_all(&bytes, 1000).unwrap_err();
        assert!(error.to_string().contains("2097152 bytes"), "{error}");
    }
}
