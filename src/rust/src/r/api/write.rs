//! Explicit writes into the blocks of named objects: the savvy functions
//! behind `fmalloc_write()`, `fmalloc_set_attr()` and
//! `fmalloc_get(copy = TRUE)` (R/write.R).
//!
//! R decides invisibly whether `x[i] <- v` writes into a vector or into a
//! copy (reference counts, closures such as `[<-.data.frame`, coercion of
//! the value). The functions here write straight into the mapped elements
//! of a vector got from a heap, whatever R's reference counts: the write
//! reaches the file or fails with a classed error. R/write.R picks the
//! vector (a column, a matrix), turns the user's indices into 1-based
//! positions and the value into the stored type (or refuses it); this
//! module scans the positions ([`fmalloc_write_scan`]: every one checked
//! before anything is written) and copies: a run of consecutive positions
//! in one piece (the heap writes a large one through the file:
//! `Heap::write`), element by element otherwise. Character vectors
//! are written through their shared string pool (`crate::pool`), which
//! grows it when needed, or refuses a forked child's write that needs room.

use std::cell::Cell;

use savvy::unwind_protect::unwind_protect;
use savvy::{savvy, OwnedListSexp, OwnedRealSexp, OwnedStringSexp, Sexp};

use crate::error::Error;
use crate::heap::ElemType;
use crate::r::error::protected;
use crate::r::ffi::*;
use crate::r::named::leaf::{data_pointer, vector_over_block};
use crate::r::types::char_elt;
use crate::r::vector::altrep::vec_data_of;
use crate::r::vector::data::{private_copy, Store, VecData};
use crate::strpool;

/// Positions are read from R in chunks of this many (never expanding an
/// ALTREP index such as a compact `1:n`).
const CHUNK: usize = 4096;

/// What [`scan`] found in an index vector.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scan {
    /// Valid positions, consecutive from `first` (1-based; any for none).
    Run { first: u64 },
    /// Valid positions, not consecutive.
    Scatter,
    /// The first invalid entry: its place in the index (1-based) and value
    /// (NA, not a whole number, or outside `1..=len`).
    Bad { at: u64, value: f64 },
}

/// A chunk of an index vector as R holds it.
#[derive(Clone, Copy)]
enum Chunk<'a> {
    Int(&'a [i32]),
    Real(&'a [f64]),
}

/// Folds the entries of an index into a [`Scan`] (pure: tested alone).
struct Scanner {
    len: u64,
    seen: u64,
    first: u64,
    prev: u64,
    run: bool,
    bad: Option<(u64, f64)>,
}

impl Scanner {
    fn new(len: u64) -> Self {
        Scanner {
            len,
            seen: 0,
            first: 0,
            prev: 0,
            run: true,
            bad: None,
        }
    }

    /// Takes the next chunk; `false` once an invalid entry was seen.
    fn push(&mut self, chunk: Chunk<'_>) -> bool {
        match chunk {
            Chunk::Int(c) => {
                for (k, &v) in c.iter().enumerate() {
                    // NA_integer_ is negative: invalid as any value < 1.
                    if v < 1 || v as u64 > self.len {
                        let value = if v == i32::MIN {
                            f64::NAN
                        } else {
                            f64::from(v)
                        };
                        return self.fail(k, value);
                    }
                    self.take(k, v as u64);
                }
            }
            Chunk::Real(c) => {
                for (k, &v) in c.iter().enumerate() {
                    // NaN fails every comparison.
                    if !(v >= 1.0 && v <= self.len as f64 && v.fract() == 0.0) {
                        return self.fail(k, v);
                    }
                    self.take(k, v as u64);
                }
            }
        }
        self.seen += match chunk {
            Chunk::Int(c) => c.len(),
            Chunk::Real(c) => c.len(),
        } as u64;
        true
    }

    #[inline]
    fn take(&mut self, k: usize, pos: u64) {
        if self.seen == 0 && k == 0 {
            self.first = pos;
        } else if pos != self.prev.wrapping_add(1) {
            self.run = false;
        }
        self.prev = pos;
    }

    fn fail(&mut self, k: usize, value: f64) -> bool {
        self.bad = Some((self.seen + k as u64 + 1, value));
        false
    }

    fn finish(&self) -> Scan {
        match self.bad {
            Some((at, value)) => Scan::Bad { at, value },
            None if self.run => Scan::Run { first: self.first },
            None => Scan::Scatter,
        }
    }
}

/// Calls `f` with every chunk of `index` (an integer or double vector)
/// until it returns `false`. Entries are read through `*_GET_REGION` under
/// unwind protection (an ALTREP index may raise an R error); `f` must not
/// own values whose destructors matter.
fn for_each_chunk(index: SEXP, f: &mut dyn FnMut(Chunk<'_>) -> bool) -> savvy::Result<()> {
    // SAFETY: type and length reads of a SEXP R passed in.
    let (ty, n) = unsafe { (TYPEOF(index) as SEXPTYPE, XLENGTH(index)) };
    if ty != INTSXP && ty != REALSXP {
        return Err(Error::Invalid("internal error: positions must be numbers".into()).into());
    }
    let f = Cell::new(Some(f));
    let slot = &f;
    // SAFETY: region reads into stack buffers; an R error longjmps into
    // unwind_protect past no Rust values with destructors (the buffers are
    // plain arrays, `f` is borrowed from the caller).
    unsafe {
        unwind_protect(|| {
            let Some(f) = slot.take() else {
                return R_NilValue;
            };
            let mut ibuf = [0 as std::os::raw::c_int; CHUNK];
            let mut rbuf = [0f64; CHUNK];
            let mut j: R_xlen_t = 0;
            while j < n {
                let want = (CHUNK as R_xlen_t).min(n - j);
                let (got, chunk) = if ty == INTSXP {
                    let got = INTEGER_GET_REGION(index, j, want, ibuf.as_mut_ptr());
                    (got, Chunk::Int(&ibuf[..got.clamp(0, want) as usize]))
                } else {
                    let got = REAL_GET_REGION(index, j, want, rbuf.as_mut_ptr());
                    (got, Chunk::Real(&rbuf[..got.clamp(0, want) as usize]))
                };
                if got <= 0 || !f(chunk) {
                    break;
                }
                j += got;
            }
            R_NilValue
        })?;
    }
    Ok(())
}

fn scan(index: SEXP, len: u64) -> savvy::Result<Scan> {
    let mut s = Scanner::new(len);
    for_each_chunk(index, &mut |c| s.push(c))?;
    Ok(s.finish())
}

/// How the 1-based positions in `index` select elements of a vector of
/// `len` elements: `list(kind = "run", at = )` (the first position) for consecutive valid
/// positions (also for none), `list(kind = "scatter")` for other valid
/// positions, `list(kind = "bad", at = , value = )` for the first invalid
/// entry (NA, not whole, outside `1..len`). R words the error.
/// @noRd
#[savvy]
fn fmalloc_write_scan(index: Sexp, len: f64) -> savvy::Result<Sexp> {
    let len = if len.is_finite() && len >= 0.0 {
        len as u64
    } else {
        0
    };
    let found = scan(index.0, len)?;
    let mut out = OwnedListSexp::new(3, true)?;
    let (kind, a, b) = match found {
        Scan::Run { first } => ("run", first as f64, 0.0),
        Scan::Scatter => ("scatter", 0.0, 0.0),
        Scan::Bad { at, value } => ("bad", at as f64, value),
    };
    out.set_name_and_value(0, "kind", OwnedStringSexp::try_from_scalar(kind)?)?;
    out.set_name_and_value(1, "at", OwnedRealSexp::try_from_scalar(a)?)?;
    out.set_name_and_value(2, "value", OwnedRealSexp::try_from_scalar(b)?)?;
    out.into()
}

/// The data of the fmalloc vector `x`, when its elements can be written in
/// the heap file now.
///
/// # Safety
/// `x` must be a valid SEXP; the reference lives as long as `x`.
unsafe fn writable<'a>(x: SEXP) -> savvy::Result<&'a VecData> {
    // SAFETY: vec_data_of checks the class before reading data1.
    let Some(d) = (unsafe { vec_data_of(x) }) else {
        return Err(
            Error::Invalid("internal error: the target is not a vector of a heap".into()).into(),
        );
    };
    // SAFETY: a live VecData (x is reachable), only read.
    let d = unsafe { &*d };
    if d.readonly {
        return Err(Error::ReadOnly {
            path: d.heap.path().to_path_buf(),
        }
        .into());
    }
    // A writable heap's fixed-size vectors never get a private copy; a
    // character vector's expanded copy follows its pool.
    // SAFETY: x is one of our instances.
    if d.elem != ElemType::String && unsafe { private_copy(x) }.is_some() {
        return Err(
            Error::Invalid("internal error: the target's data are a private copy".into()).into(),
        );
    }
    Ok(d)
}

/// Checks `value` against the target: the stored type (R/write.R converted
/// it) and a length of 1 (recycled) or `count`.
fn value_fits(d: &VecData, value: SEXP, count: u64) -> savvy::Result<u64> {
    // SAFETY: type and length reads of a SEXP R passed in.
    let (ty, n) = unsafe { (TYPEOF(value) as SEXPTYPE, XLENGTH(value) as u64) };
    if ty != crate::r::types::sexptype(d.elem) {
        return Err(Error::Invalid("internal error: value of the wrong type".into()).into());
    }
    if n != 1 && n != count {
        return Err(
            Error::Invalid(format!("internal error: {n} values for {count} positions")).into(),
        );
    }
    Ok(n)
}

/// Writes `value` (the stored type, 1 or `count` elements) at the 1-based
/// positions `first .. first + count - 1` of `x`: one copy.
/// @noRd
#[savvy]
fn fmalloc_write_run(x: Sexp, first: f64, count: f64, value: Sexp) -> savvy::Result<()> {
    // SAFETY: x is a SEXP R passed in, alive for this call.
    let d = unsafe { writable(x.0) }?;
    let whole = |v: f64| v.is_finite() && v >= 0.0 && v.fract() == 0.0;
    if !whole(first) || !whole(count) || (count > 0.0 && first < 1.0) {
        return Err(Error::Invalid("internal error: bad run".into()).into());
    }
    let (first, count) = (first as u64, count as u64);
    if count == 0 {
        return Ok(());
    }
    if first.checked_add(count - 1).is_none_or(|last| last > d.len) {
        return Err(Error::Invalid(format!(
            "internal error: positions {first}..{} past the end ({})",
            first.saturating_add(count - 1),
            d.len
        ))
        .into());
    }
    let n = value_fits(d, value.0, count)?;
    let start = first - 1;
    if d.elem == ElemType::String {
        return write_strings(d, value.0, n, &mut (start..start + count));
    }
    let size = d.elem.size() as usize;
    let src = data_pointer(value.0, d.elem)? as *const u8;
    if n == count && !d.heap.is_forked() && d.heap.offset_of(src).is_none() {
        // A value in R's memory: the heap writes it (a large run through
        // the file, without page faults). A forked child keeps copying
        // through its mapping, where a classic vector's pages are its own.
        if let Store::Block { data_off, .. } = &d.store {
            // SAFETY: `src` holds `count` elements of `size` bytes (the
            // value's data, alive for this call), outside the heap.
            let data = unsafe { std::slice::from_raw_parts(src, count as usize * size) };
            d.heap.write(data_off + start * size as u64, data)?;
            return Ok(());
        }
    }
    // SAFETY: the target's elements [start, start + count) lie inside its
    // mapped block (checked above; mapped memory never moves while `x`
    // holds the heap); `src` holds `n` elements of the same size. `copy`
    // (memmove) allows the value to be a view of the same block.
    unsafe {
        let dst = d.mapped().add(start as usize * size);
        if n == count {
            std::ptr::copy(src, dst, count as usize * size);
        } else {
            fill(dst, src, size, count as usize);
        }
    }
    Ok(())
}

/// Writes `value` (the stored type, 1 or as many elements as `index`) at
/// the 1-based positions in `index` (checked by `fmalloc_write_scan`, and
/// checked again here, every one, before anything is written).
/// @noRd
#[savvy]
fn fmalloc_write_at(x: Sexp, index: Sexp, value: Sexp) -> savvy::Result<()> {
    // SAFETY: x is a SEXP R passed in, alive for this call.
    let d = unsafe { writable(x.0) }?;
    if let Scan::Bad { at, value } = scan(index.0, d.len)? {
        return Err(Error::Invalid(format!(
            "internal error: position {value} (entry {at}) is not valid"
        ))
        .into());
    }
    // SAFETY: a length read.
    let count = unsafe { XLENGTH(index.0) } as u64;
    let n = value_fits(d, value.0, count)?;
    if d.elem == ElemType::String {
        let mut positions = Vec::with_capacity(count.min(1 << 20) as usize);
        for_each_chunk(index.0, &mut |c| {
            match c {
                Chunk::Int(c) => positions.extend(c.iter().map(|&v| v as u64 - 1)),
                Chunk::Real(c) => positions.extend(c.iter().map(|&v| v as u64 - 1)),
            }
            true
        })?;
        return write_strings(d, value.0, n, &mut positions.into_iter());
    }
    let size = d.elem.size() as usize;
    let src = data_pointer(value.0, d.elem)? as *const u8;
    // The value may be a view of the same block: read it whole first then.
    let bytes = n as usize * size;
    let block = d.mapped() as usize..d.mapped() as usize + d.len as usize * size;
    let staged: Option<Vec<u8>> = (block.start < src as usize + bytes
        && (src as usize) < block.end)
        // SAFETY: `src` holds `n` elements of `size` bytes.
        .then(|| unsafe { std::slice::from_raw_parts(src, bytes) }.to_vec());
    let src = staged.as_ref().map_or(src, |s| s.as_ptr());
    let dst = d.mapped();
    let len = d.len;
    let mut k = 0usize;
    let mut put = |pos: u64| -> bool {
        // Re-checked: nothing is written outside the vector.
        if !(1..=len).contains(&pos) {
            return false;
        }
        let from = if n == 1 { 0 } else { k };
        // SAFETY: pos - 1 < len: inside the mapped block; `from` < n.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.add(from * size),
                dst.add((pos - 1) as usize * size),
                size,
            );
        }
        k += 1;
        true
    };
    for_each_chunk(index.0, &mut |c| match c {
        // Entries were checked by `scan` (whole numbers, in range).
        Chunk::Int(c) => c.iter().all(|&v| put(v.max(0) as u64)),
        Chunk::Real(c) => c.iter().all(|&v| put(v as u64)),
    })?;
    if k as u64 != count {
        return Err(Error::Invalid(format!(
            "internal error: wrote {k} of {count} positions (the index changed?)"
        ))
        .into());
    }
    Ok(())
}

/// Copies the `size`-byte element at `src` into `count` consecutive
/// elements at `dst`.
///
/// # Safety
/// `dst` has room for `count` elements; `src` holds one.
unsafe fn fill(dst: *mut u8, src: *const u8, size: usize, count: usize) {
    let mut one = [0u8; 16];
    // SAFETY: size <= 16 (the largest element, complex); src holds it.
    unsafe { std::ptr::copy_nonoverlapping(src, one.as_mut_ptr(), size) };
    for k in 0..count {
        // SAFETY: element k of `count` at dst.
        unsafe { std::ptr::copy_nonoverlapping(one.as_ptr(), dst.add(k * size), size) };
    }
}

/// Writes the strings of `value` (1, recycled, or one per position) at the
/// 0-based `positions` through the vector's shared pool. In a forked child
/// every write must fit where the old string is (the pool cannot grow
/// there): checked for all of them first, so such a write changes nothing
/// or everything.
fn write_strings(
    d: &VecData,
    value: SEXP,
    n: u64,
    positions: &mut dyn Iterator<Item = u64>,
) -> savvy::Result<()> {
    let pool = d.pool().ok_or_else(|| {
        Error::Invalid("internal error: a character vector without a pool".into())
    })?;
    let src = data_pointer(value, ElemType::String)? as *const SEXP;
    // SAFETY: `src` points at the n CHARSXPs of `value`, alive for the call.
    let chars = unsafe { std::slice::from_raw_parts(src, n as usize) };
    let positions: Vec<u64> = positions.collect();
    let elt = |k: usize| char_elt(chars[if n == 1 { 0 } else { k }]);
    if d.heap.is_forked() {
        let fits = pool.read(|buf| -> Result<bool, Error> {
            let l =
                strpool::layout(buf).map_err(|e| Error::corrupt(d.heap.path(), e.to_string()))?;
            for (k, &i) in positions.iter().enumerate() {
                if !strpool::fits_in_place(buf, &l, i, elt(k))
                    .map_err(|e| Error::corrupt(d.heap.path(), e.to_string()))?
                {
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if !fits {
            return Err(Error::Forked {
                path: d.heap.path().to_path_buf(),
            }
            .into());
        }
    }
    // All or nothing: the pool gets the room every string that does not
    // fit in place needs before the first is written, so a full disk (or
    // heap) fails here, not halfway. Only the last value written at a
    // position counts (as R's `x[c(1, 1)] <- c("a", "b")`): the others
    // would only add garbage, and are skipped, so that the count is exact.
    let todo = last_per_position(&positions);
    let needed = pool.read(|buf| -> Result<u64, Error> {
        let l = strpool::layout(buf).map_err(|e| Error::corrupt(d.heap.path(), e.to_string()))?;
        let mut needed = 0u64;
        for &k in &todo {
            let v = elt(k);
            if !strpool::fits_in_place(buf, &l, positions[k], v)
                .map_err(|e| Error::corrupt(d.heap.path(), e.to_string()))?
            {
                needed = needed.saturating_add(v.map_or(0, |(b, _)| b.len() as u64));
            }
        }
        Ok(needed)
    })?;
    let mut malloc =
        |heap: &crate::heap::Heap, bytes| crate::r::vector::alloc::heap_malloc(heap, bytes);
    pool.reserve(needed, &mut malloc)?;
    for &k in &todo {
        pool.set(positions[k], elt(k), &mut malloc)?;
    }
    Ok(())
}

/// The indices into `positions` of the last write to each position, in
/// order of position (all of them, in order, when no position repeats).
fn last_per_position(positions: &[u64]) -> Vec<usize> {
    if positions.windows(2).all(|w| w[0] < w[1]) {
        return (0..positions.len()).collect();
    }
    let mut idx: Vec<usize> = (0..positions.len()).collect();
    // By position, the last write first; then keep the first of each.
    idx.sort_unstable_by_key(|&k| (positions[k], std::cmp::Reverse(k)));
    idx.dedup_by_key(|k| positions[*k]);
    idx
}

/// A new vector over the same heap block as `x` (an fmalloc vector whose
/// data are in the file), with `x`'s attributes and no other reference:
/// its attributes can be changed without R copying the data.
/// @noRd
#[savvy]
fn fmalloc_write_view(x: Sexp) -> savvy::Result<Sexp> {
    // SAFETY: x is a SEXP R passed in.
    let d = unsafe { writable(x.0) }?;
    let v = vector_over_block(&d.heap, &d.desc())?;
    let (to, from) = (v.0, x.0);
    // SAFETY: the fresh vector is protected for the call (R restores the
    // protection stack on an error inside unwind_protect to a level that
    // still includes it); the attribute copy allocates a pairlist.
    let copied = unsafe {
        Rf_protect(to);
        let r = unwind_protect(|| {
            SHALLOW_DUPLICATE_ATTRIB(to, from);
            R_NilValue
        });
        Rf_unprotect(1);
        r
    };
    copied?;
    Ok(v)
}

/// A deep copy of `x` in R's memory: every heap vector of it becomes an
/// ordinary vector (the ALTREP classes' Duplicate), attributes and all.
/// @noRd
#[savvy]
fn fmalloc_write_copy(x: Sexp) -> savvy::Result<Sexp> {
    let from = x.0;
    // SAFETY: R's duplicate of a SEXP R passed in; an R error (out of
    // memory) longjmps into unwind_protect past no Rust values.
    let out = unsafe { protected(|| Rf_duplicate(from)) }?;
    Ok(Sexp(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_of(len: u64, xs: &[f64]) -> Scan {
        // In chunks of two, as doubles and (when they fit) as integers.
        let mut s = Scanner::new(len);
        for c in xs.chunks(2) {
            if !s.push(Chunk::Real(c)) {
                break;
            }
        }
        let real = s.finish();
        if xs.iter().all(|x| x.fract() == 0.0 && x.abs() < 1e9) {
            let ints: Vec<i32> = xs.iter().map(|&x| x as i32).collect();
            let mut s = Scanner::new(len);
            for c in ints.chunks(2) {
                if !s.push(Chunk::Int(c)) {
                    break;
                }
            }
            assert_eq!(s.finish(), real, "{xs:?}");
        }
        real
    }

    #[test]
    fn runs_scatters_and_the_first_bad_entry() {
        assert_eq!(scan_of(10, &[]), Scan::Run { first: 0 });
        assert_eq!(scan_of(10, &[3.0, 4.0, 5.0]), Scan::Run { first: 3 });
        assert_eq!(scan_of(10, &[10.0]), Scan::Run { first: 10 });
        assert_eq!(scan_of(10, &[3.0, 5.0]), Scan::Scatter);
        assert_eq!(scan_of(10, &[3.0, 3.0]), Scan::Scatter);
        assert_eq!(scan_of(10, &[2.0, 1.0]), Scan::Scatter);
        assert_eq!(
            scan_of(10, &[1.0, 11.0, 0.0]),
            Scan::Bad { at: 2, value: 11.0 }
        );
        assert_eq!(scan_of(10, &[0.0]), Scan::Bad { at: 1, value: 0.0 });
        assert_eq!(scan_of(10, &[1.5]), Scan::Bad { at: 1, value: 1.5 });
        assert!(matches!(scan_of(10, &[f64::NAN]), Scan::Bad { at: 1, .. }));
        assert!(matches!(
            scan_of(10, &[f64::INFINITY]),
            Scan::Bad { at: 1, .. }
        ));
        assert_eq!(scan_of(0, &[1.0]), Scan::Bad { at: 1, value: 1.0 });
        assert_eq!(
            scan_of(10, &[4.0, 5.0, 6.0, 7.0, 8.0]),
            Scan::Run { first: 4 }
        );
        assert_eq!(scan_of(10, &[4.0, 5.0, 7.0, 8.0]), Scan::Scatter);
        assert_eq!(
            scan_of(10, &[4.0, 5.0, 6.0, 7.0, 11.0]),
            Scan::Bad { at: 5, value: 11.0 }
        );
        let mut s = Scanner::new(10);
        assert!(!s.push(Chunk::Int(&[3, i32::MIN])));
        assert!(matches!(s.finish(), Scan::Bad { at: 2, value } if value.is_nan()));
    }
}
