//! The string pool: how a character vector is laid out in one heap block.
//!
//! Pure Rust over a byte slice (the block), so it is tested without R. The R
//! layer (`r::vector::altstring`) maps the block, builds CHARSXPs from [`get`] and calls
//! [`set`] from ALTREP `Set_elt`; when [`set`] reports [`PoolError::Full`] it
//! asks [`plan_grow`] whether to compact into a new block or to grow the block
//! with `Heap::realloc`.
//!
//! All integers are little-endian. Offsets in the index are relative to the
//! start of the string area, so the block may move (realloc) or be mapped at
//! any address.
//!
//! | offset        | size   | field                                           |
//! |---------------|--------|-------------------------------------------------|
//! | 0             | 8      | magic `b"FMSTRPL1"`                             |
//! | 8             | 8      | `n`: number of elements                         |
//! | 16            | 8      | `cap`: bytes of the string area                 |
//! | 24            | 8      | `used`: append cursor in the string area        |
//! | 32            | 8      | `garbage`: dead bytes below `used`              |
//! | 40            | 24     | reserved, zero                                  |
//! | 64            | 16 * n | index, one [`ENTRY`]-byte record per element    |
//! | 64 + 16 * n   | cap    | string area: the bytes of the strings           |
//!
//! Index record: `off: u64` (into the string area), `len: u32`, `flags: u32`.
//! `flags` bit 0 is set for a present string (so an all-zero index is all
//! `NA`); bits 1-2 hold the [`Encoding`]; every other bit must be zero.
//! Every string's bytes belong to exactly one record, so a record may be
//! overwritten in place when the new string is not longer.
//!
//! The block comes from an untrusted file: [`layout`] validates the header
//! against the block size before any arithmetic uses it and [`get`] checks
//! every record against `used`.

use std::fmt;

pub const MAGIC: [u8; 8] = *b"FMSTRPL1";
pub const HEADER: u64 = 64;
pub const ENTRY: u64 = 16;

const OFF_N: usize = 8;
const OFF_CAP: usize = 16;
const OFF_USED: usize = 24;
const OFF_GARBAGE: usize = 32;

const FLAG_PRESENT: u32 = 1;
const ENC_SHIFT: u32 = 1;
const ENC_MASK: u32 = 0b11 << ENC_SHIFT;

/// The encoding mark of a string, as R's `cetype_t` (CE_NATIVE .. CE_BYTES).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Native = 0,
    Utf8 = 1,
    Latin1 = 2,
    Bytes = 3,
}

impl Encoding {
    fn from_bits(b: u32) -> Encoding {
        match b & 0b11 {
            0 => Encoding::Native,
            1 => Encoding::Utf8,
            2 => Encoding::Latin1,
            _ => Encoding::Bytes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolError {
    /// The block is not a valid string pool (or an index is out of range).
    Corrupt(String),
    /// The string area lacks room for `needed` more bytes.
    Full { needed: u64 },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Corrupt(what) => write!(f, "invalid string pool: {what}"),
            PoolError::Full { needed } => write!(f, "string pool needs {needed} more bytes"),
        }
    }
}

/// The validated header of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub n: u64,
    pub cap: u64,
    pub used: u64,
    pub garbage: u64,
}

impl Layout {
    /// Start of the string area within the block.
    pub fn area_start(&self) -> u64 {
        HEADER + ENTRY * self.n
    }

    /// Bytes of strings that are still referenced.
    pub fn live(&self) -> u64 {
        self.used - self.garbage
    }
}

/// One element: `None` is `NA`.
pub type Elt<'a> = Option<(&'a [u8], Encoding)>;

/// Bytes of a block holding `n` elements and a string area of `cap` bytes;
/// `None` on overflow.
pub fn block_size(n: u64, cap: u64) -> Option<u64> {
    ENTRY.checked_mul(n)?.checked_add(HEADER)?.checked_add(cap)
}

fn rd(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

fn wr(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Formats `buf` as a pool of `n` elements, all `NA`, whose string area is
/// the rest of the block.
pub fn init(buf: &mut [u8], n: u64) -> Result<Layout, PoolError> {
    let total = buf.len() as u64;
    let index_end = block_size(n, 0)
        .filter(|&e| e <= total)
        .ok_or_else(|| PoolError::Corrupt(format!("{total} bytes cannot hold {n} elements")))?;
    // index_end <= buf.len(), so the casts below are in range.
    buf[..index_end as usize].fill(0);
    buf[..8].copy_from_slice(&MAGIC);
    let l = Layout {
        n,
        cap: total - index_end,
        used: 0,
        garbage: 0,
    };
    write_layout(buf, &l);
    Ok(l)
}

fn write_layout(buf: &mut [u8], l: &Layout) {
    wr(buf, OFF_N, l.n);
    wr(buf, OFF_CAP, l.cap);
    wr(buf, OFF_USED, l.used);
    wr(buf, OFF_GARBAGE, l.garbage);
}

/// Reads and validates the header against the block size.
pub fn layout(buf: &[u8]) -> Result<Layout, PoolError> {
    let bad = |what: &str| Err(PoolError::Corrupt(what.to_string()));
    if (buf.len() as u64) < HEADER {
        return bad("block smaller than the header");
    }
    if buf[..8] != MAGIC {
        return bad("bad magic");
    }
    let l = Layout {
        n: rd(buf, OFF_N),
        cap: rd(buf, OFF_CAP),
        used: rd(buf, OFF_USED),
        garbage: rd(buf, OFF_GARBAGE),
    };
    match block_size(l.n, l.cap) {
        Some(size) if size <= buf.len() as u64 => {}
        _ => return bad("element count or capacity exceed the block"),
    }
    if l.used > l.cap || l.garbage > l.used {
        return bad("used or garbage byte counts out of range");
    }
    Ok(l)
}

fn entry_at(l: &Layout, i: u64) -> Result<usize, PoolError> {
    if i >= l.n {
        return Err(PoolError::Corrupt(format!(
            "element {} out of range (n = {})",
            i.saturating_add(1),
            l.n
        )));
    }
    // i < n and HEADER + ENTRY * n fits in the block (validated by layout()).
    Ok((HEADER + ENTRY * i) as usize)
}

fn read_entry(buf: &[u8], at: usize) -> (u64, u32, u32) {
    let off = rd(buf, at);
    let lenflags = rd(buf, at + 8);
    (off, lenflags as u32, (lenflags >> 32) as u32)
}

fn write_entry(buf: &mut [u8], at: usize, off: u64, len: u32, flags: u32) {
    wr(buf, at, off);
    wr(buf, at + 8, u64::from(len) | (u64::from(flags) << 32));
}

/// Element `i`, validated against the header.
pub fn get<'a>(buf: &'a [u8], l: &Layout, i: u64) -> Result<Elt<'a>, PoolError> {
    let at = entry_at(l, i)?;
    let (off, len, flags) = read_entry(buf, at);
    if flags & !(FLAG_PRESENT | ENC_MASK) != 0 {
        return Err(PoolError::Corrupt(format!("unknown flags {flags:#x}")));
    }
    if flags & FLAG_PRESENT == 0 {
        return Ok(None);
    }
    let end = off
        .checked_add(u64::from(len))
        .filter(|&e| e <= l.used)
        .ok_or_else(|| PoolError::Corrupt("string outside the pool".into()))?;
    let start = (l.area_start() + off) as usize;
    let stop = (l.area_start() + end) as usize;
    Ok(Some((
        &buf[start..stop],
        Encoding::from_bits(flags >> ENC_SHIFT),
    )))
}

/// Whether [`set`] would write `v` at `i` without taking room from the free
/// end of the string area: an `NA`, an empty string, or a string not longer than the valid
/// one it replaces. Such writes touch only element `i`'s own record and
/// bytes (and the header's garbage count), so processes that share the
/// block may make them to different elements at once.
pub fn fits_in_place(buf: &[u8], l: &Layout, i: u64, v: Elt<'_>) -> Result<bool, PoolError> {
    let at = entry_at(l, i)?;
    let Some((bytes, _)) = v else {
        return Ok(true);
    };
    if bytes.is_empty() {
        // An empty string takes no bytes of the string area.
        return Ok(true);
    }
    let (old_off, old_len, old_flags) = read_entry(buf, at);
    let old_len = u64::from(old_len);
    Ok(old_flags & FLAG_PRESENT != 0
        && old_off.checked_add(old_len).is_some_and(|e| e <= l.used)
        && bytes.len() as u64 <= old_len)
}

/// Sets element `i`. Overwrites in place when the new string is not longer
/// than the old one, appends otherwise; `Full` (nothing changed) when the
/// string area lacks room.
pub fn set(buf: &mut [u8], l: &mut Layout, i: u64, v: Elt<'_>) -> Result<(), PoolError> {
    let at = entry_at(l, i)?;
    let (old_off, old_len, old_flags) = read_entry(buf, at);
    let old_present = old_flags & FLAG_PRESENT != 0;
    let old_len = if old_present { u64::from(old_len) } else { 0 };
    let old_valid = old_present && old_off.checked_add(old_len).is_some_and(|e| e <= l.used);
    let (bytes, enc) = match v {
        None => {
            write_entry(buf, at, 0, 0, 0);
            if old_valid {
                l.garbage += old_len;
            }
            write_layout(buf, l);
            return Ok(());
        }
        Some(v) => v,
    };
    let len = u32::try_from(bytes.len())
        .map_err(|_| PoolError::Corrupt("string longer than 4 GiB".to_string()))?;
    let flags = FLAG_PRESENT | ((enc as u32) << ENC_SHIFT);
    let new_len = u64::from(len);
    let off = if old_valid && new_len <= old_len {
        l.garbage += old_len - new_len;
        old_off
    } else {
        if l.cap - l.used < new_len {
            return Err(PoolError::Full {
                needed: new_len - (l.cap - l.used),
            });
        }
        if old_valid {
            l.garbage += old_len;
        }
        let off = l.used;
        l.used += new_len;
        off
    };
    let start = (l.area_start() + off) as usize;
    buf[start..start + bytes.len()].copy_from_slice(bytes);
    write_entry(buf, at, off, len, flags);
    write_layout(buf, l);
    Ok(())
}

/// After the block grew (realloc), makes the string area span the whole block.
pub fn grow_capacity(buf: &mut [u8], l: &mut Layout) {
    let total = buf.len() as u64;
    if total > l.area_start() + l.cap {
        l.cap = total - l.area_start();
        write_layout(buf, l);
    }
}

/// Copies the live strings of `src` into `dst` (a fresh block), dropping the
/// garbage. `dst` must hold the index and at least `live` bytes.
pub fn compact_into(src: &[u8], l: &Layout, dst: &mut [u8]) -> Result<Layout, PoolError> {
    let mut out = init(dst, l.n)?;
    if out.cap < l.live() {
        return Err(PoolError::Full {
            needed: l.live() - out.cap,
        });
    }
    for i in 0..l.n {
        if let Some(v) = get(src, l, i)? {
            set(dst, &mut out, i, Some(v))?;
        }
    }
    Ok(out)
}

/// What to do when a string of `needed` more bytes does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grow {
    /// Copy the live strings into a new block with this string capacity.
    Compact { cap: u64 },
    /// Grow the block in place (or move it) to this string capacity.
    Realloc { cap: u64 },
}

/// Compacts when at least half of the used bytes are garbage (so repeated
/// overwrites stay bounded), otherwise doubles the capacity.
pub fn plan_grow(l: &Layout, needed: u64) -> Grow {
    let want = l.live().saturating_add(needed);
    let cap = want.saturating_mul(2).max(l.cap.saturating_mul(2)).max(256);
    if l.garbage >= l.used / 2 && l.garbage > 0 {
        Grow::Compact {
            cap: want.saturating_mul(2).max(256),
        }
    } else {
        Grow::Realloc { cap }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prng::Rng;

    fn pool(n: u64, cap: u64) -> (Vec<u8>, Layout) {
        let mut buf = vec![0xAAu8; block_size(n, cap).unwrap() as usize];
        let l = init(&mut buf, n).unwrap();
        (buf, l)
    }

    #[test]
    fn fresh_pool_is_all_na() {
        let (buf, l) = pool(5, 100);
        assert_eq!(l.cap, 100);
        assert_eq!(layout(&buf).unwrap(), l);
        for i in 0..5 {
            assert_eq!(get(&buf, &l, i).unwrap(), None);
        }
        assert!(get(&buf, &l, 5).is_err());
    }

    #[test]
    fn empty_string_fits_in_a_full_pool() {
        // A full string area: "" over NA needs no room (a forked child may
        // write it), a one-byte string does.
        let (mut buf, mut l) = pool(3, 2);
        set(&mut buf, &mut l, 0, Some((b"ab", Encoding::Utf8))).unwrap();
        assert_eq!(l.used, l.cap);
        assert!(fits_in_place(&buf, &l, 1, Some((b"", Encoding::Native))).unwrap());
        assert!(!fits_in_place(&buf, &l, 1, Some((b"c", Encoding::Native))).unwrap());
        set(&mut buf, &mut l, 1, Some((b"", Encoding::Native))).unwrap();
        assert_eq!(
            get(&buf, &l, 1).unwrap(),
            Some((&b""[..], Encoding::Native))
        );
        assert_eq!(
            get(&buf, &l, 0).unwrap(),
            Some((&b"ab"[..], Encoding::Utf8))
        );
        assert_eq!(get(&buf, &l, 2).unwrap(), None);
    }

    #[test]
    fn zeroed_index_reads_as_na() {
        let (mut buf, l) = pool(3, 10);
        set(&mut buf, &mut l.clone(), 1, Some((b"x", Encoding::Utf8))).unwrap();
        let l = layout(&buf).unwrap();
        let at = (HEADER + ENTRY) as usize;
        buf[at..at + 16].fill(0);
        assert_eq!(get(&buf, &l, 1).unwrap(), None);
    }

    #[test]
    fn set_get_encodings_and_na() {
        let (mut buf, mut l) = pool(4, 64);
        let e = "é".as_bytes();
        set(&mut buf, &mut l, 0, Some((e, Encoding::Utf8))).unwrap();
        set(&mut buf, &mut l, 1, Some((&[0xE9], Encoding::Latin1))).unwrap();
        set(&mut buf, &mut l, 2, Some((b"", Encoding::Native))).unwrap();
        set(&mut buf, &mut l, 3, Some((&[0, 1, 0xff], Encoding::Bytes))).unwrap();
        assert_eq!(get(&buf, &l, 0).unwrap(), Some((e, Encoding::Utf8)));
        assert_eq!(
            get(&buf, &l, 1).unwrap(),
            Some((&[0xE9u8][..], Encoding::Latin1))
        );
        assert_eq!(
            get(&buf, &l, 2).unwrap(),
            Some((&b""[..], Encoding::Native))
        );
        assert_eq!(
            get(&buf, &l, 3).unwrap(),
            Some((&[0u8, 1, 0xff][..], Encoding::Bytes))
        );
        set(&mut buf, &mut l, 0, None).unwrap();
        assert_eq!(get(&buf, &l, 0).unwrap(), None);
        assert_eq!(l.garbage, 2);
        assert_eq!(layout(&buf).unwrap(), l);
    }

    #[test]
    fn shorter_overwrite_is_in_place_and_full_changes_nothing() {
        let (mut buf, mut l) = pool(2, 8);
        set(&mut buf, &mut l, 0, Some((b"abcdef", Encoding::Native))).unwrap();
        set(&mut buf, &mut l, 0, Some((b"xy", Encoding::Native))).unwrap();
        assert_eq!(l.used, 6);
        assert_eq!(l.garbage, 4);
        let before = buf.clone();
        let err = set(&mut buf, &mut l, 1, Some((b"123", Encoding::Native))).unwrap_err();
        assert_eq!(err, PoolError::Full { needed: 1 });
        assert_eq!(buf, before);
        assert_eq!(plan_grow(&l, 3), Grow::Compact { cap: 256 });
    }

    #[test]
    fn compact_and_grow_keep_values() {
        let (mut buf, mut l) = pool(3, 16);
        set(&mut buf, &mut l, 0, Some((b"aaaaaaaa", Encoding::Utf8))).unwrap();
        set(&mut buf, &mut l, 1, Some((b"bbbb", Encoding::Utf8))).unwrap();
        set(&mut buf, &mut l, 0, None).unwrap();
        let mut dst = vec![0u8; block_size(3, 4).unwrap() as usize];
        let mut c = compact_into(&buf, &l, &mut dst).unwrap();
        assert_eq!(c.used, 4);
        assert_eq!(
            get(&dst, &c, 1).unwrap(),
            Some((&b"bbbb"[..], Encoding::Utf8))
        );
        assert_eq!(get(&dst, &c, 0).unwrap(), None);
        // Growing the block (as realloc does) extends the capacity.
        dst.resize(dst.len() + 10, 0);
        grow_capacity(&mut dst, &mut c);
        assert_eq!(c.cap, 14);
        set(&mut dst, &mut c, 2, Some((b"0123456789", Encoding::Native))).unwrap();
        assert_eq!(layout(&dst).unwrap(), c);
        let mut tiny = vec![0u8; block_size(3, 3).unwrap() as usize];
        assert!(matches!(
            compact_into(&buf, &l, &mut tiny),
            Err(PoolError::Full { .. })
        ));
    }

    #[test]
    fn corrupt_headers_and_records_are_refused() {
        let (buf, _) = pool(2, 8);
        assert!(layout(&buf[..10]).is_err());
        let mut b = buf.clone();
        b[0] = b'X';
        assert!(layout(&b).is_err());
        let mut b = buf.clone();
        wr(&mut b, OFF_N, u64::MAX / 8);
        assert!(layout(&b).is_err());
        let mut b = buf.clone();
        wr(&mut b, OFF_CAP, 1 << 40);
        assert!(layout(&b).is_err());
        let mut b = buf.clone();
        wr(&mut b, OFF_USED, 9);
        assert!(layout(&b).is_err());
        // A record pointing past `used` or with unknown flags.
        let mut b = buf.clone();
        let l = layout(&b).unwrap();
        write_entry(&mut b, HEADER as usize, 0, 3, FLAG_PRESENT);
        assert!(get(&b, &l, 0).is_err());
        write_entry(&mut b, HEADER as usize, u64::MAX, 3, FLAG_PRESENT);
        assert!(get(&b, &l, 0).is_err());
        write_entry(&mut b, HEADER as usize, 0, 0, 0x80);
        assert!(get(&b, &l, 0).is_err());
    }

    /// Random sets against a shadow model, growing like the R layer does.
    #[test]
    fn random_sets_match_shadow_model() {
        let mut cases = 0;
        for seed in 1..=40u64 {
            let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let n = 1 + rng.below(50);
            let (mut buf, mut l) = pool(n, rng.below(64));
            let mut shadow: Vec<Option<(Vec<u8>, Encoding)>> = vec![None; n as usize];
            for _ in 0..400 {
                let i = rng.below(n);
                let v = if rng.below(6) == 0 {
                    None
                } else {
                    let len = rng.below(40) as usize;
                    let bytes: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
                    Some((bytes, Encoding::from_bits(rng.below(4) as u32)))
                };
                let arg = v.as_ref().map(|(b, e)| (&b[..], *e));
                loop {
                    match set(&mut buf, &mut l, i, arg) {
                        Ok(()) => break,
                        Err(PoolError::Full { needed }) => match plan_grow(&l, needed) {
                            Grow::Compact { cap } => {
                                let mut dst = vec![0u8; block_size(n, cap).unwrap() as usize];
                                l = compact_into(&buf, &l, &mut dst).unwrap();
                                buf = dst;
                            }
                            Grow::Realloc { cap } => {
                                buf.resize(block_size(n, cap).unwrap() as usize, 0);
                                grow_capacity(&mut buf, &mut l);
                            }
                        },
                        Err(e) => panic!("{e}"),
                    }
                }
                shadow[i as usize] = v;
                assert_eq!(layout(&buf).unwrap(), l);
                assert!(l.live() <= l.cap);
                cases += 1;
            }
            for (i, s) in shadow.iter().enumerate() {
                let got = get(&buf, &l, i as u64).unwrap();
                assert_eq!(got, s.as_ref().map(|(b, e)| (&b[..], *e)));
            }
            // Garbage stays bounded: the pool is never more than ~4x its live data.
            assert!(l.cap <= 4 * (l.live() + 40) + 512, "{l:?}");
        }
        assert_eq!(cases, 40 * 400);
    }
}
