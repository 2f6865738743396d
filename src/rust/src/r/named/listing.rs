//! The columns of `fmalloc_ls()`, built from the catalog's per-entry
//! summaries straight into R vectors.
//!
//! A listing makes n strings per text column: each through savvy's
//! per-element conversion would open an R context (unwind protection) per
//! string, which cost more than everything else of a listing. Here every
//! value is decoded and checked in Rust first, then all columns are built
//! inside one unwind protection, with R's C API.

use std::os::raw::c_char;

use savvy::Sexp;

use crate::format::meta::{self, SummaryRef};
use crate::heap::Listed;
use crate::r::error::protected;
use crate::r::ffi::*;

/// Column names, in order (R/named.R's `fmalloc_ls()` relies on them).
const COLUMNS: [&str; 9] = [
    "name", "type", "class", "length", "dim", "bytes", "created", "modified", "status",
];

/// A numeric column: integer when every value is NA or fits an integer
/// (as `length()` gives; doubles such as 1e6 would print as "1e+06" in a
/// data frame), double otherwise.
struct Numbers {
    values: Vec<f64>,
    integer: bool,
}

impl Numbers {
    fn new(values: Vec<f64>) -> Self {
        let integer = values
            .iter()
            .all(|v| v.is_nan() || *v <= f64::from(i32::MAX));
        Numbers { values, integer }
    }
}

/// The listing as a named list of the nine columns (`COLUMNS`), each of
/// length `entries.len()`: name, type, class, dim and status character;
/// length and bytes integer or double (`Numbers`); created and modified
/// double seconds since the epoch. A damaged entry (its summary cannot be
/// read) has NA type, class, length, dim and bytes, and status
/// "damaged: why". `damaged`, if given, becomes the list's attribute of
/// that name (a one-string character vector).
pub(crate) fn ls_columns(entries: &[Listed], damaged: Option<&str>) -> savvy::Result<Sexp> {
    // The one decoding (`meta::decode_summary_ref`) owns what a damaged
    // summary is: `fmalloc_check()` reports the same entries. It refuses a
    // NUL byte (Rf_mkCharLenCE would raise an R error on one; names never
    // hold one: the catalog refuses them).
    let decoded: Vec<Result<SummaryRef<'_>, String>> = entries
        .iter()
        .map(|e| match &e.summary {
            Err(why) => Err(why.clone()),
            Ok(s) => meta::decode_summary_ref(s),
        })
        .collect();
    let status: Vec<std::borrow::Cow<'static, str>> = decoded
        .iter()
        .map(|r| match r {
            Ok(_) => "ok".into(),
            Err(why) => format!("damaged: {why}").replace('\0', " ").into(),
        })
        .collect();
    let summaries: Vec<Option<&SummaryRef<'_>>> = decoded.iter().map(|r| r.as_ref().ok()).collect();
    // SAFETY: R_NaReal is R's NA_real_, set before any package loads.
    let na_real = unsafe { R_NaReal };
    let lengths = Numbers::new(
        summaries
            .iter()
            .map(|s| s.map_or(na_real, |s| s.length))
            .collect(),
    );
    // A damaged entry's bytes are NA too: its record is what the damage
    // concerns, so no field of it but the name is vouched for.
    let bytes = Numbers::new(
        entries
            .iter()
            .zip(&summaries)
            .map(|(e, s)| s.map_or(na_real, |_| e.data_bytes as f64))
            .collect(),
    );
    let created: Vec<f64> = entries
        .iter()
        .map(|e| e.created_ms as f64 / 1000.0)
        .collect();
    let modified: Vec<f64> = entries
        .iter()
        .map(|e| e.modified_ms as f64 / 1000.0)
        .collect();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    let types: Vec<Option<&str>> = summaries.iter().map(|s| s.map(|s| s.type_name)).collect();
    let classes: Vec<Option<&str>> = summaries.iter().map(|s| s.map(|s| s.class)).collect();
    let dims: Vec<Option<&str>> = summaries.iter().map(|s| s.and_then(|s| s.dim)).collect();
    let status: Vec<Option<&str>> = status.iter().map(|s| Some(s.as_ref())).collect();
    let names: Vec<Option<&str>> = names.into_iter().map(Some).collect();
    // SAFETY: allocations and element writes on vectors protected in this
    // closure; an R error (out of memory) longjmps into the unwind
    // protection past no Rust value owned by the closure (every vector
    // above lives in this frame, outside it). Strings hold no NUL (the decoder
    // refused them) and are shorter than 2^31 bytes (names: 255; summary texts:
    // at most the 512 bytes a leaf record keeps, or a meta's u32 lengths,
    // which the decoder bounded by the bytes present; checked again).
    let out = unsafe {
        protected(|| {
            let out = Rf_protect(Rf_allocVector(VECSXP, COLUMNS.len() as R_xlen_t));
            let column_names = Rf_protect(Rf_allocVector(STRSXP, COLUMNS.len() as R_xlen_t));
            for (i, c) in COLUMNS.iter().enumerate() {
                SET_STRING_ELT(column_names, i as R_xlen_t, mk_char(c));
            }
            Rf_setAttrib(out, Rf_install(c"names".as_ptr()), column_names);
            Rf_unprotect(1);
            SET_VECTOR_ELT(out, 0, text_column(&names));
            SET_VECTOR_ELT(out, 1, text_column(&types));
            SET_VECTOR_ELT(out, 2, text_column(&classes));
            SET_VECTOR_ELT(out, 3, number_column(&lengths));
            SET_VECTOR_ELT(out, 4, text_column(&dims));
            SET_VECTOR_ELT(out, 5, number_column(&bytes));
            SET_VECTOR_ELT(out, 6, real_column(&created));
            SET_VECTOR_ELT(out, 7, real_column(&modified));
            SET_VECTOR_ELT(out, 8, text_column(&status));
            if let Some(d) = damaged {
                Rf_setAttrib(
                    out,
                    Rf_install(c"damaged".as_ptr()),
                    text_column(&[Some(d)]),
                );
            }
            Rf_unprotect(1);
            out
        })?
    };
    Ok(Sexp(out))
}

/// A CHARSXP of UTF-8 text without NUL, shorter than 2^31 bytes.
///
/// # Safety
/// Calls R; may raise an R error (out of memory): call it under unwind
/// protection.
unsafe fn mk_char(s: &str) -> SEXP {
    let len = s.len().min(i32::MAX as usize) as i32;
    // SAFETY: `s` is valid for `len` bytes (see the function's contract).
    unsafe { Rf_mkCharLenCE(s.as_ptr() as *const c_char, len, CE_UTF8) }
}

/// A character vector of `v` (None: NA). Runs of the same text (types and
/// classes repeat) share one CHARSXP without asking R's string cache again.
///
/// # Safety
/// As [`mk_char`].
unsafe fn text_column(v: &[Option<&str>]) -> SEXP {
    // SAFETY: see the function's contract; `x` is protected while strings
    // are made, each stored at once.
    unsafe {
        let x = Rf_protect(Rf_allocVector(STRSXP, v.len() as R_xlen_t));
        let mut last: Option<(&str, SEXP)> = None;
        for (i, s) in v.iter().enumerate() {
            let c = match s {
                None => R_NaString,
                Some(s) => match last {
                    Some((t, c)) if t == *s => c,
                    _ => {
                        let c = mk_char(s);
                        last = Some((s, c));
                        c
                    }
                },
            };
            SET_STRING_ELT(x, i as R_xlen_t, c);
        }
        Rf_unprotect(1);
        x
    }
}

/// # Safety
/// Calls R (allocation): call it under unwind protection.
unsafe fn real_column(v: &[f64]) -> SEXP {
    // SAFETY: a new double vector of v.len() elements is filled.
    unsafe {
        let x = Rf_allocVector(REALSXP, v.len() as R_xlen_t);
        if !v.is_empty() {
            std::ptr::copy_nonoverlapping(v.as_ptr(), REAL(x), v.len());
        }
        x
    }
}

/// # Safety
/// As [`real_column`].
unsafe fn number_column(v: &Numbers) -> SEXP {
    if !v.integer {
        // SAFETY: forwarded.
        return unsafe { real_column(&v.values) };
    }
    // SAFETY: a new integer vector of v.len() elements is filled; values
    // are NA or at most i32::MAX (checked by `Numbers::new`), and never
    // negative (lengths and byte counts), so the conversion is exact up to
    // truncation, as as.integer() does.
    unsafe {
        let x = Rf_allocVector(INTSXP, v.values.len() as R_xlen_t);
        let p = INTEGER(x);
        for (i, &f) in v.values.iter().enumerate() {
            *p.add(i) = if f.is_nan() { R_NaInt } else { f as i32 };
        }
        x
    }
}
