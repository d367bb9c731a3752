//! Content-defined chunking with FastCDC (2020).
//!
//! Cut points depend on the content, not on offsets, so an insertion shifts only the
//! chunks around it and the rest deduplicate. The parameters are recorded in the
//! repository config: changing them changes every cut point, so they are fixed per
//! repository.
//!
//! [`fixed_chunks`] cuts at fixed offsets instead, for data changed in place in
//! aligned blocks (database pages), where one changed page would otherwise change
//! a whole content-defined chunk of about 1 MiB.
//!
//! The chunker keeps one reusable buffer of twice the maximum chunk size; it refills
//! only when less than one maximum chunk is buffered, so each byte is copied at most
//! once more than it is read.

use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut, select_masks};
use serde::{Deserialize, Serialize};

/// Chunk size bounds, in bytes (restic's choice: 512 KiB, 1 MiB average, 8 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Whether FastCDC accepts these bounds (a hostile config must not panic us).
    pub fn is_valid(&self) -> bool {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0
    }
}

pub struct Chunker {
    params: ChunkerParams,
    masks: [u64; 4],
    buffer: Vec<u8>,
}

impl Chunker {
    pub fn new(params: ChunkerParams) -> Self {
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, Normalization::Level1);
        Chunker {
            params,
            masks: [mask_s, mask_l, mask_s << 1, mask_l << 1],
            buffer: Vec::new(),
        }
    }

    /// Length of the next chunk at the start of `data`, which holds at least one maximum
    /// chunk or everything that is left.
    fn next_cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        let [mask_s, mask_l, mask_s_ls, mask_l_ls] = self.masks;
        let (_, end) = cut(
            data,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            mask_s,
            mask_l,
            mask_s_ls,
            mask_l_ls,
        );
        end.max(1).min(data.len())
    }

    /// Push mode, for data produced piece by piece (a tree stream): emits every chunk
    /// of `pending` that can be cut with certainty and removes it; with `last`, emits
    /// everything. Gives the same cut points as [`Chunker::chunk_reader`].
    pub fn drain_chunks<E>(
        &self,
        pending: &mut Vec<u8>,
        last: bool,
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let max = self.params.max_size as usize;
        let mut start = 0;
        while pending.len() - start >= max || (last && start < pending.len()) {
            let len = self.next_cut(&pending[start..]);
            emit(&pending[start..start + len])?;
            start += len;
        }
        pending.drain(..start);
        Ok(())
    }

    /// Reads `reader` to its end and hands each chunk to `emit`, in order. Returns the
    /// number of bytes read. An error from `emit` stops the read and is returned.
    pub fn chunk_reader<R: Read, E: From<io::Error>>(
        &mut self,
        mut reader: R,
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let max = self.params.max_size as usize;
        if self.buffer.len() < 2 * max {
            self.buffer.resize(2 * max, 0);
        }
        let (mut start, mut end, mut eof, mut total) = (0usize, 0usize, false, 0u64);
        loop {
            if !eof && end - start < max {
                self.buffer.copy_within(start..end, 0);
                end -= start;
                start = 0;
                while end < self.buffer.len() {
                    let n = match reader.read(&mut self.buffer[end..]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e.into()),
                    };
                    if n == 0 {
                        eof = true;
                        break;
                    }
                    end += n;
                    total += n as u64;
                }
            }
            if start == end {
                return Ok(total);
            }
            let len = self.next_cut(&self.buffer[start..end]);
            emit(&self.buffer[start..start + len])?;
            start += len;
        }
    }
}

/// Reads `reader` to its end and hands it to `emit` in pieces of `size` bytes (the
/// last one may be shorter), in order. Returns the number of bytes read.
pub fn fixed_chunks<R: Read, E: From<io::Error>>(
    mut reader: R,
    size: usize,
    mut emit: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let mut buffer = vec![0u8; size.max(1)];
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < buffer.len() {
            match reader.read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        total += filled as u64;
        emit(&buffer[..filled])?;
        if filled < buffer.len() {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> ChunkerParams {
        ChunkerParams {
            min_size: 1024,
            avg_size: 4096,
            max_size: 16384,
        }
    }

    fn chunks_of(data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        Chunker::new(small())
            .chunk_reader::<_, io::Error>(data, |c| {
                out.push(c.to_vec());
                Ok(())
            })
            .unwrap();
        out
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn chunks_cover_the_input_within_bounds() {
        let data = pseudo_random(300_000, 1);
        let chunks = chunks_of(&data);
        assert_eq!(chunks.concat(), data);
        for c in &chunks[..chunks.len() - 1] {
            assert!((1024..=16384).contains(&c.len()), "{}", c.len());
        }
        assert!(chunks_of(&[]).is_empty());
    }

    #[test]
    fn an_insertion_shifts_only_nearby_chunks() {
        let data = pseudo_random(400_000, 2);
        let mut edited = data.clone();
        edited.splice(200_000..200_000, b"inserted bytes".iter().copied());
        let before: std::collections::HashSet<_> = chunks_of(&data).into_iter().collect();
        let after = chunks_of(&edited);
        let shared = after.iter().filter(|c| before.contains(*c)).count();
        assert!(
            shared + 3 >= after.len(),
            "{shared} of {} shared",
            after.len()
        );
    }

    #[test]
    fn push_mode_cuts_like_pull_mode() {
        let data = pseudo_random(200_000, 3);
        let chunker = Chunker::new(small());
        let (mut pending, mut pushed) = (Vec::new(), Vec::new());
        for piece in data.chunks(777) {
            pending.extend_from_slice(piece);
            chunker
                .drain_chunks::<io::Error>(&mut pending, false, |c| {
                    pushed.push(c.to_vec());
                    Ok(())
                })
                .unwrap();
        }
        chunker
            .drain_chunks::<io::Error>(&mut pending, true, |c| {
                pushed.push(c.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(pushed, chunks_of(&data));
    }

    #[test]
    fn fixed_chunks_cut_at_every_size_bytes() {
        let data = pseudo_random(10_000, 4);
        let mut pieces = Vec::new();
        // A reader returning short reads must not move the cuts.
        let reader = io::BufReader::with_capacity(777, &data[..]);
        let total = fixed_chunks::<_, io::Error>(reader, 4096, |c| {
            pieces.push(c.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(total, 10_000);
        let lengths: Vec<usize> = pieces.iter().map(Vec::len).collect();
        assert_eq!(lengths, [4096, 4096, 1808]);
        assert_eq!(pieces.concat(), data);
        let none = fixed_chunks::<_, io::Error>(&[][..], 4096, |_| panic!("no data"));
        assert_eq!(none.unwrap(), 0);
    }

    #[test]
    fn hostile_params_are_invalid() {
        assert!(ChunkerParams::default().is_valid());
        assert!(
            !ChunkerParams {
                min_size: 0,
                avg_size: 1,
                max_size: 2
            }
            .is_valid()
        );
        assert!(
            !ChunkerParams {
                min_size: 4096,
                avg_size: 1024,
                max_size: 8192
            }
            .is_valid()
        );
    }
}
