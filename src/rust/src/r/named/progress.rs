//! Progress of long copies into the heap (`fmalloc_save()` of a large
//! vector that is not in the heap yet): in interactive sessions, a copy that
//! has taken more than two seconds shows a percentage on R's console
//! (stderr),
//! updated at most four times a second. The copy runs in chunks of
//! [`CHUNK`] bytes, each a plain `copy_from_slice`: checking the clock once
//! per chunk costs nothing next to copying it. The chunks are large on
//! purpose: memcpy switches to non-temporal stores only above a threshold
//! (glibc: 3/4 of the shared cache, 192 MiB on a 32 MiB-L3 machine here),
//! and below it an 800 MB copy into the mapping measured 2.4 times slower
//! with 64 MiB chunks (4.9 s against 2.0 s).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Set by R (`fmalloc_save()`): `interactive()` and the option
/// `fmalloc.progress` (default `TRUE`).
static ENABLED: AtomicBool = AtomicBool::new(false);
/// How long a copy runs before it shows progress, in milliseconds (2 s;
/// the tests set 0).
static QUIET_MS: AtomicU64 = AtomicU64::new(2000);
/// The chunk size in bytes: [`CHUNK`] (the tests set less).
static CHUNK_BYTES: AtomicU64 = AtomicU64::new(CHUNK as u64);

const CHUNK: usize = 1 << 30;
const EVERY: Duration = Duration::from_millis(250);

/// Whether the copies of the next saves may show progress, after how many
/// seconds, and in chunks of how many bytes (R passes the defaults, 2 s and
/// 1 GiB, unless the tests ask for less; see `fmalloc_named_store`).
pub(crate) fn enable(on: bool, after_secs: f64, chunk_bytes: f64) {
    ENABLED.store(on, Ordering::Relaxed);
    let ms = if after_secs.is_finite() && after_secs >= 0.0 {
        (after_secs * 1000.0) as u64
    } else {
        2000
    };
    QUIET_MS.store(ms, Ordering::Relaxed);
    let chunk = if chunk_bytes.is_finite() && chunk_bytes >= 4096.0 {
        chunk_bytes as u64
    } else {
        CHUNK as u64
    };
    CHUNK_BYTES.store(chunk, Ordering::Relaxed);
}

/// Copies `src` into `dst` (same length), showing progress when enabled
/// and the copy is slow.
pub(crate) fn copy(dst: &mut [u8], src: &[u8]) {
    let chunk = usize::try_from(CHUNK_BYTES.load(Ordering::Relaxed)).unwrap_or(CHUNK);
    if !ENABLED.load(Ordering::Relaxed) || dst.len() <= chunk {
        dst.copy_from_slice(src);
        return;
    }
    let total = dst.len();
    let shown = copy_in_chunks(dst, src, chunk, |done| {
        savvy::io::r_eprint(&line(done, total), false);
    });
    if shown {
        savvy::io::r_eprint(&line(total, total), true);
    }
}

/// Copies `src` into `dst` `chunk` bytes at a time; once the copy has run
/// for `QUIET_MS`, calls `show(bytes done)` at most every [`EVERY`].
/// Returns whether it showed anything.
fn copy_in_chunks(dst: &mut [u8], src: &[u8], chunk: usize, mut show: impl FnMut(usize)) -> bool {
    let quiet_for = Duration::from_millis(QUIET_MS.load(Ordering::Relaxed));
    let start = Instant::now();
    let mut shown: Option<Instant> = None;
    let mut done = 0;
    for (d, s) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
        d.copy_from_slice(s);
        done += d.len();
        let now = Instant::now();
        if now - start >= quiet_for && shown.is_none_or(|t| now - t >= EVERY) {
            show(done);
            shown = Some(now);
        }
    }
    shown.is_some()
}

/// "\rRfmalloc: copying into the heap:  45% of 7.5 GiB".
fn line(done: usize, total: usize) -> String {
    let pct = (done as f64 / total as f64 * 100.0).floor();
    let gib = total as f64 / (1u64 << 30) as f64;
    format!("\rRfmalloc: copying into the heap: {pct:3.0}% of {gib:.1} GiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line_rewrites_itself() {
        assert_eq!(
            line(1 << 30, 4 << 30),
            "\rRfmalloc: copying into the heap:  25% of 4.0 GiB"
        );
        assert!(line(3, 3).contains("100%"));
    }

    #[test]
    fn a_chunked_copy_copies_everything() {
        let src: Vec<u8> = (0..100_003).map(|i| (i % 251) as u8).collect();
        let mut dst = vec![0u8; src.len()];
        let mut calls = 0;
        // Fast: nothing shown.
        assert!(!copy_in_chunks(&mut dst, &src, 4096, |_| calls += 1));
        assert!(dst == src && calls == 0);
    }
}
