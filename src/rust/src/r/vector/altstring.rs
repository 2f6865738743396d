//! Element methods of `fmalloc_string`: character vectors over a string
//! pool block (layout in `crate::strpool`).
//!
//! Elt builds a CHARSXP from the pool bytes with `Rf_mkCharLenCE`, keeping
//! the encoding mark (native, UTF-8, latin1, bytes), on every read: there is
//! no per-vector cache, so reading a vector larger than memory keeps none of
//! it in R's heap. The price is a lookup in R's global CHARSXP cache per
//! read: 75-450 ns per element in `==` and `unique()` against 5-15 for an
//! ordinary vector (`?create_fmalloc_vector` says so, and that `x[]` takes
//! an ordinary copy). Set_elt
//! writes the new string into the pool (in place when not longer, appended
//! otherwise) through the pool shared by every vector over it
//! (`crate::pool`), which grows or compacts it when full. Once a data
//! pointer was requested the vector reads its expanded copy in data2 (see
//! `altrep`) while no other view wrote the pool since, and the pool
//! otherwise (the copy is refreshed when a data pointer is asked for
//! again); Set_elt writes the pool, and the copy when it is current. A
//! read-only vector writes only its private copy.

use std::os::raw::c_char;

use crate::error::Error;
use crate::heap::{BlockDesc, ElemType, Heap};
use crate::r::error::{guard, Failure};
use crate::r::ffi::*;
use crate::r::types::{cetype, char_elt};
use crate::r::vector::alloc::{heap_malloc, new_block};
use crate::r::vector::data::{private_copy, vd, VecData};
use crate::strpool::{self, Encoding};

/// Initial string area of a new pool: 8 bytes per element, at least 256.
fn initial_capacity(n: u64) -> u64 {
    n.saturating_mul(8).max(256)
}

/// Allocates and formats a pool of `n` NA strings; returns its block
/// (owned by the caller: one reference).
pub(crate) fn new_pool(heap: &Heap, n: u64) -> Result<BlockDesc, crate::error::Error> {
    let bytes = strpool::block_size(n, initial_capacity(n)).ok_or_else(|| {
        crate::error::Error::Invalid(format!("a character vector of length {n} is too long"))
    })?;
    new_block(heap, ElemType::String, bytes, bytes, |buf| {
        strpool::init(buf, n)
            .map(drop)
            .map_err(|e| crate::error::Error::Invalid(e.to_string()))
    })
}

/// Element `i` of the pool as a CHARSXP (`NA_STRING` for NA). Raises an R
/// error for a corrupt pool.
///
/// # Safety
/// R API call; `i` must be below `d.len`.
pub(crate) unsafe fn pool_elt(d: &VecData, i: R_xlen_t) -> SEXP {
    let got = guard(|| {
        let Some(pool) = d.pool() else {
            return Err(Failure::internal("a character vector without a pool"));
        };
        pool.read(|buf| {
            let damaged = |what: String| {
                Failure::from(Error::corrupt(
                    d.heap.path(),
                    format!("element {} of a character vector: {what}", i + 1),
                ))
            };
            let l = strpool::layout(buf).map_err(|e| damaged(e.to_string()))?;
            match strpool::get(buf, &l, i as u64).map_err(|e| damaged(e.to_string()))? {
                None => Ok(None),
                Some((bytes, enc)) => {
                    if bytes.contains(&0) || bytes.len() > i32::MAX as usize {
                        return Err(damaged("holds a NUL byte or is too long".into()));
                    }
                    Ok(Some((bytes.as_ptr(), bytes.len() as i32, cetype(enc))))
                }
            }
        })
    });
    // SAFETY: the bytes stay mapped and unchanged (this vector holds the
    // pool, nothing writes it meanwhile); mkCharLenCE copies them.
    unsafe {
        match got {
            None => R_NaString,
            Some((p, n, ce)) => Rf_mkCharLenCE(p as *const c_char, n, ce),
        }
    }
}

/// Whether `d`'s expanded copy (data2) misses writes made through another
/// view of its pool. A read-only vector's copy is private: never stale.
pub(crate) fn stale(d: &VecData) -> bool {
    !d.readonly && d.pool().is_some_and(|p| p.generation() != d.seen)
}

/// Makes data2 of `x`: an ordinary STRSXP with the pool's strings (see
/// `r::vector::altrep`). Returns it.
///
/// # Safety
/// `x` must be an instance of `fmalloc_string` without data2, `d` its
/// data; allocates (may longjmp) with no Rust value with a destructor live.
pub(crate) unsafe fn expand(x: SEXP, d: &mut VecData) -> SEXP {
    let n = d.len as R_xlen_t;
    // SAFETY: allocation of a character vector of x's length, filled from
    // the live pool.
    unsafe {
        let copy = Rf_protect(Rf_allocVector(STRSXP, n));
        if let Some(pool) = d.pool() {
            d.seen = pool.generation();
        }
        for i in 0..n {
            SET_STRING_ELT(copy, i, pool_elt(d, i));
        }
        R_set_altrep_data2(x, copy);
        Rf_unprotect(1);
        copy
    }
}

/// data2, the expanded strings of `x`: made on first use, brought up to
/// date when another view wrote the pool since.
///
/// # Safety
/// `x` must be an instance of `fmalloc_string`, `d` its data; allocates
/// (may longjmp) with no Rust value with a destructor live.
pub(crate) unsafe fn expanded(x: SEXP, d: &mut VecData) -> SEXP {
    // SAFETY: forwarded to the caller.
    unsafe {
        let Some(copy) = private_copy(x) else {
            return expand(x, d);
        };
        if stale(d) {
            if let Some(p) = d.pool() {
                d.seen = p.generation();
            }
            for i in 0..d.len as R_xlen_t {
                SET_STRING_ELT(copy, i, pool_elt(d, i));
            }
        }
        copy
    }
}

/// data2 of `x` when it holds the current strings: a read-only vector's
/// private copy, or an expanded copy no other view has written past.
///
/// # Safety
/// `x` must be an instance of `fmalloc_string`, `d` its data.
unsafe fn current_copy(x: SEXP, d: &VecData) -> Option<SEXP> {
    // SAFETY: forwarded to the caller.
    unsafe { private_copy(x) }.filter(|_| !stale(d))
}

pub(crate) unsafe extern "C" fn elt(x: SEXP, i: R_xlen_t) -> SEXP {
    // SAFETY: R calls this with an instance of fmalloc_string, 0 <= i < len.
    unsafe {
        let d = vd(x);
        // A stale copy is left stale (brought up to date, all n strings,
        // only when R asks for the data pointer): refreshing it here made
        // an element-wise copy between two views, one expanded, O(n^2).
        if let Some(copy) = current_copy(x, d) {
            return STRING_ELT(copy, i);
        }
        pool_elt(d, i)
    }
}

pub(crate) unsafe extern "C" fn set_elt(x: SEXP, i: R_xlen_t, v: SEXP) {
    // SAFETY: R calls this with an instance of fmalloc_string, a CHARSXP v
    // and 0 <= i < len.
    unsafe {
        let d = vd(x);
        if d.readonly {
            // Never written through a read-only mapping: the private copy.
            SET_STRING_ELT(expanded(x, d), i, v);
            return;
        }
        // The pool always gets the string, so the file has the current
        // strings; an expanded copy (made when R asked for a data pointer)
        // in step with the pool stays in step; a stale one stays stale.
        let copy = current_copy(x, d);
        let value = char_elt(v);
        guard(|| set_in_pool(d, i as u64, value));
        if let Some(copy) = copy {
            SET_STRING_ELT(copy, i, v);
            if let Some(p) = d.pool() {
                d.seen = p.generation();
            }
        }
    }
}

/// Writes `value` at `i` through the shared pool (which grows, compacts or
/// refuses a forked child's append: see `crate::pool`).
fn set_in_pool(d: &VecData, i: u64, value: Option<(&[u8], Encoding)>) -> Result<(), Failure> {
    let pool = d
        .pool()
        .ok_or_else(|| Failure::internal("a character vector without a pool"))?;
    pool.set(i, value, &mut |heap, bytes| heap_malloc(heap, bytes))
        .map_err(Failure::from)
}
