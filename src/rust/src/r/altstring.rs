//! Element methods of `fmalloc_string`: character vectors over a string
//! pool block (layout in `crate::strpool`).
//!
//! Elt builds a CHARSXP from the pool bytes with `Rf_mkCharLenCE`, keeping
//! the encoding mark (native, UTF-8, latin1, bytes); R's global CHARSXP
//! cache makes repeated reads cheap, so there is no per-vector cache. Set_elt
//! writes the new string into the pool (in place when not longer, appended
//! otherwise); when the pool is full it is compacted into a new block or
//! grown with `Heap::realloc`, as `strpool::plan_grow` decides. Once a data
//! pointer was requested the vector reads its expanded copy in data2 (see
//! `altrep`); Set_elt then writes both, so the pool stays current. A
//! read-only vector writes only its private copy.

use std::os::raw::c_char;

use super::altrep::{guard, vd, VecData};
use super::error::tagged_message;
use super::ffi::*;
use crate::error::Error;
use crate::heap::{BlockDesc, ElemType, Heap};
use crate::strpool::{self, Encoding, Grow};

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
    super::vector::new_block(heap, ElemType::String, bytes, bytes, |buf| {
        strpool::init(buf, n)
            .map(drop)
            .map_err(|e| crate::error::Error::Invalid(e.to_string()))
    })
}

fn pool_buf(d: &VecData) -> &[u8] {
    // SAFETY: `mapped` points to `pool_len` mapped bytes while `d.heap` lives.
    unsafe { std::slice::from_raw_parts(d.mapped, d.pool_len as usize) }
}

fn pool_buf_mut(d: &mut VecData) -> &mut [u8] {
    // SAFETY: as `pool_buf`; the heap is writable (checked by callers) and
    // R is single-threaded.
    unsafe { std::slice::from_raw_parts_mut(d.mapped, d.pool_len as usize) }
}

/// R's encoding mark for a stored string's encoding.
pub(crate) fn cetype(e: Encoding) -> cetype_t {
    match e {
        Encoding::Native => CE_NATIVE,
        Encoding::Utf8 => CE_UTF8,
        Encoding::Latin1 => CE_LATIN1,
        Encoding::Bytes => CE_BYTES,
    }
}

fn encoding(ce: cetype_t) -> Encoding {
    match ce {
        CE_UTF8 => Encoding::Utf8,
        CE_LATIN1 => Encoding::Latin1,
        CE_BYTES => Encoding::Bytes,
        _ => Encoding::Native,
    }
}

/// Element `i` of the pool as a CHARSXP (`NA_STRING` for NA). Raises an R
/// error for a corrupt pool.
///
/// # Safety
/// R API call; `i` must be below `d.len`.
pub(crate) unsafe fn pool_elt(d: &VecData, i: R_xlen_t) -> SEXP {
    let got = guard(|| {
        let buf = pool_buf(d);
        let damaged = |what: String| {
            tagged_message(&Error::corrupt(
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
    });
    // SAFETY: the bytes stay mapped; mkCharLenCE copies them.
    unsafe {
        match got {
            None => R_NaString,
            Some((p, n, ce)) => Rf_mkCharLenCE(p as *const c_char, n, ce),
        }
    }
}

pub(crate) unsafe extern "C" fn elt(x: SEXP, i: R_xlen_t) -> SEXP {
    // SAFETY: R calls this with an instance of fmalloc_string, 0 <= i < len.
    unsafe {
        let d = vd(x);
        if d.materialised {
            return STRING_ELT(R_altrep_data2(x), i);
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
            if !d.materialised {
                super::altrep::materialise(x, d);
            }
            SET_STRING_ELT(R_altrep_data2(x), i, v);
            return;
        }
        let value = if v == R_NaString {
            None
        } else {
            let n = LENGTH(v);
            let p = R_CHAR(v) as *const u8;
            let bytes = std::slice::from_raw_parts(p, n.max(0) as usize);
            Some((bytes, encoding(Rf_getCharCE(v))))
        };
        guard(|| set_in_pool(d, i as u64, value));
        // An expanded copy (made when R asked for a data pointer) is kept in
        // step with the pool, so the file always has the current strings.
        if d.materialised {
            SET_STRING_ELT(R_altrep_data2(x), i, v);
        }
    }
}

/// Writes `value` at `i`, growing or compacting the pool when it is full.
/// Errors come back as tagged messages (classed in R).
fn set_in_pool(d: &mut VecData, i: u64, value: Option<(&[u8], Encoding)>) -> Result<(), String> {
    let damaged = |d: &VecData, e: strpool::PoolError| {
        tagged_message(&Error::corrupt(
            d.heap.path(),
            format!("element {} of a character vector: {e}", i + 1),
        ))
    };
    loop {
        let mut l = strpool::layout(pool_buf(d)).map_err(|e| damaged(d, e))?;
        let needed = match strpool::set(pool_buf_mut(d), &mut l, i, value) {
            Ok(()) => return Ok(()),
            Err(strpool::PoolError::Full { needed }) => needed,
            Err(e) => return Err(damaged(d, e)),
        };
        grow(d, &l, needed).map_err(|e| tagged_message(&e))?;
    }
}

fn grow(d: &mut VecData, l: &strpool::Layout, needed: u64) -> Result<(), crate::error::Error> {
    let too_long = || {
        crate::error::Error::Invalid("a character vector's string pool would be too large".into())
    };
    // A named pool moves (new block + catalog update): the catalog must
    // never point at a block that was resized or freed.
    let named = super::named_leaf::is_named_block(&d.heap, d.block);
    let plan = match strpool::plan_grow(l, needed) {
        Grow::Realloc { cap } if named => Grow::Compact { cap },
        plan => plan,
    };
    match plan {
        Grow::Compact { cap } => {
            let bytes = strpool::block_size(l.n, cap).ok_or_else(too_long)?;
            let off = super::vector::heap_malloc(&d.heap, bytes)?;
            let p = match d.heap.ptr(off, bytes) {
                Ok(p) => p.as_ptr(),
                Err(e) => {
                    let _ = d.heap.release(off);
                    return Err(e);
                }
            };
            // SAFETY: the fresh block [p, p + bytes) is mapped and unshared.
            let dst = unsafe { std::slice::from_raw_parts_mut(p, bytes as usize) };
            if let Err(e) = strpool::compact_into(pool_buf(d), l, dst) {
                let _ = d.heap.release(off);
                return Err(crate::error::Error::Invalid(e.to_string()));
            }
            if named {
                let desc = BlockDesc {
                    offset: off,
                    data_offset: off,
                    elem: ElemType::String,
                    length: bytes,
                };
                if let Err(e) = super::named_leaf::move_named_block(&d.heap, d.block, &desc) {
                    let _ = d.heap.release(off);
                    return Err(e);
                }
            }
            let _ = d.heap.release(d.block);
            d.block = off;
            d.data_off = off;
            d.mapped = p;
            d.cur = p;
            d.pool_len = bytes;
        }
        Grow::Realloc { cap } => {
            let bytes = strpool::block_size(l.n, cap).ok_or_else(too_long)?;
            let off = d.heap.realloc(d.block, bytes)?;
            let p = d.heap.ptr(off, bytes)?.as_ptr();
            d.block = off;
            d.data_off = off;
            d.mapped = p;
            d.cur = p;
            d.pool_len = bytes;
            let mut l = strpool::layout(pool_buf(d))
                .map_err(|e| crate::error::Error::Invalid(e.to_string()))?;
            strpool::grow_capacity(pool_buf_mut(d), &mut l);
        }
    }
    Ok(())
}
