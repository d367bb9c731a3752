//! The mutator: a seeded random number generator and the edits that turn one corpus
//! input into the next input to try.
//!
//! Each new input is a corpus input with one to eight edits stacked (AFL's "havoc"
//! stage, without coverage feedback): bit flips, byte sets, arithmetic on a byte or a
//! little- or big-endian word, interesting values (0, -1, 0x7f.., 0xff.., u32::MAX,
//! u64::MAX, the engine's own limits), truncation, deletion, insertion and
//! duplication of runs, splicing with a second corpus input, and a word of the
//! target's dictionary (`"command"`, `DEFINER`, `ustar`, ...). Now and then an input
//! is fresh random bytes instead.

/// splitmix64: small, fast, and the same sequence for the same seed everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next() % n as u64) as usize
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A length that is usually small: runs of 1 to 4 bytes are the common case.
    fn run_len(&mut self, limit: usize) -> usize {
        let cap = match self.below(10) {
            0..=5 => 4,
            6..=8 => 64,
            _ => 4096,
        };
        1 + self.below(cap.min(limit.max(1)))
    }
}

/// Values that sit on boundaries decoders get wrong: signs, widths, and the limits
/// envsnap itself uses (1 MiB requests, 16 MiB chunks, 64 MiB tree records).
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    1 << 20,
    16 << 20,
    (64 << 20) + 1,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
];

/// A new input made from `input` (and, for splicing, `other`), at most `max_len` bytes.
pub fn mutate(
    rng: &mut Rng,
    input: &[u8],
    other: &[u8],
    dictionary: &[&[u8]],
    max_len: usize,
) -> Vec<u8> {
    if rng.one_in(50) {
        let len = rng.below(256.min(max_len + 1));
        return rng.bytes(len);
    }
    let mut out = input.to_vec();
    let edits = 1 << rng.below(4);
    for _ in 0..edits {
        edit(rng, &mut out, other, dictionary);
    }
    out.truncate(max_len);
    out
}

/// One edit of `out`, chosen at random.
fn edit(rng: &mut Rng, out: &mut Vec<u8>, other: &[u8], dictionary: &[&[u8]]) {
    let len = out.len();
    match rng.below(13) {
        0 if len > 0 => {
            let at = rng.below(len);
            out[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            out[at] = rng.next() as u8;
        }
        2 if len > 0 => {
            let at = rng.below(len);
            let delta = 1 + rng.below(35) as u8;
            out[at] = match rng.one_in(2) {
                true => out[at].wrapping_add(delta),
                false => out[at].wrapping_sub(delta),
            };
        }
        3 => overwrite_word(rng, out),
        4 if len > 0 => out.truncate(rng.below(len)),
        5 if len > 0 => {
            let at = rng.below(len);
            let n = rng.run_len(len - at);
            out.drain(at..(at + n).min(len));
        }
        6 => {
            let at = rng.below(len + 1);
            let n = rng.run_len(4096);
            let run = match rng.one_in(2) {
                true => vec![rng.next() as u8; n],
                false => rng.bytes(n),
            };
            out.splice(at..at, run);
        }
        7 if len > 0 => {
            // A run of the input copied elsewhere in it (repeated records, fields).
            let from = rng.below(len);
            let n = rng.run_len(len - from);
            let run = out[from..(from + n).min(len)].to_vec();
            let at = rng.below(len + 1);
            out.splice(at..at, run);
        }
        8 if !other.is_empty() => {
            // Splice: this input's head, the other's tail.
            let cut = rng.below(len + 1);
            let from = rng.below(other.len());
            out.truncate(cut);
            out.extend_from_slice(&other[from..]);
        }
        9 if !other.is_empty() => {
            let from = rng.below(other.len());
            let n = rng.run_len(other.len() - from);
            let at = rng.below(len + 1);
            out.splice(at..at, other[from..(from + n).min(other.len())].to_vec());
        }
        10 | 11 if !dictionary.is_empty() => {
            let word = dictionary[rng.below(dictionary.len())];
            let at = rng.below(len + 1);
            match rng.one_in(2) {
                true => {
                    out.splice(at..at, word.iter().copied());
                }
                false => {
                    let end = (at + word.len()).min(len);
                    out.splice(at..end, word.iter().copied());
                }
            }
        }
        _ if len > 0 => {
            let at = rng.below(len);
            let value = INTERESTING[rng.below(INTERESTING.len())] as u8;
            out[at] = value;
        }
        _ => out.push(rng.next() as u8),
    }
}

/// An interesting value, or a small change of the word already there, written as a
/// 2-, 4- or 8-byte word in either byte order.
fn overwrite_word(rng: &mut Rng, out: &mut Vec<u8>) {
    let width = [2, 4, 8][rng.below(3)];
    if out.len() < width {
        out.resize(width, 0);
    }
    let at = rng.below(out.len() - width + 1);
    let big_endian = rng.one_in(3);
    let mut value = INTERESTING[rng.below(INTERESTING.len())];
    if rng.one_in(3) {
        let mut current = [0u8; 8];
        current[..width].copy_from_slice(&out[at..at + width]);
        if big_endian {
            current[..width].reverse();
        }
        let delta = 1 + rng.below(16) as u64;
        value = match rng.one_in(2) {
            true => u64::from_le_bytes(current).wrapping_add(delta),
            false => u64::from_le_bytes(current).wrapping_sub(delta),
        };
    }
    let mut bytes = value.to_le_bytes()[..width].to_vec();
    if big_endian {
        bytes.reverse();
    }
    out[at..at + width].copy_from_slice(&bytes);
}

#[test]
fn mutations_stay_within_the_length_and_are_reproducible() {
    let run = |seed| {
        let mut rng = Rng::new(seed);
        (0..2000)
            .map(|_| mutate(&mut rng, b"{\"v\":1}", b"other input", &[b"ROLE"], 64))
            .collect::<Vec<_>>()
    };
    let first = run(7);
    assert!(first.iter().all(|input| input.len() <= 64));
    assert_eq!(first, run(7), "the same seed gives the same inputs");
    assert_ne!(first, run(8));
}
