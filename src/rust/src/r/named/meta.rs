//! Encoding a named object's meta (v2, `format::meta`) from the flat
//! description R/named.R makes of it (`.fm_decompose()`): one row per node in
//! stream (pre-order) order,
//!
//! - `kind`: the node kind (`format::meta::KIND_*`),
//! - `s4`: the S4 bit, `nattr`: the number of attributes,
//! - `aname`: the attribute name when the node is an attribute value (else NA),
//! - `len`: the number of elements of a list,
//! - `data`: an inline atomic vector, or the 1-based leaf index of a block,
//!
//! plus `summary = list(type, class, length, dim)`. Whatever is written is
//! decoded again before it is stored: a meta this code cannot read is never
//! written.

use std::os::raw::c_void;

use savvy::{ListSexp, NotAvailableValue, Sexp};

use crate::error::Error;
use crate::format::meta::{self, Payload, Summary, Writer};
use crate::heap::BlockDesc;
use crate::r::error::protected;
use crate::r::ffi::*;
use crate::r::types::char_elt;

fn internal(what: impl std::fmt::Display) -> savvy::Error {
    Error::Invalid(format!("internal error: bad object description ({what})")).into()
}

fn field(desc: &ListSexp, name: &str) -> savvy::Result<SEXP> {
    desc.get(name)
        .map(|s| s.0)
        .ok_or_else(|| internal(format!("no field '{name}'")))
}

/// The i32 data of an integer or logical vector made by R code.
fn ints(x: SEXP, what: &str) -> savvy::Result<Vec<i32>> {
    let s = Sexp(x);
    match s.into_typed() {
        savvy::TypedSexp::Integer(v) => Ok(v.as_slice().to_vec()),
        savvy::TypedSexp::Logical(v) => Ok(v.as_slice_raw().to_vec()),
        _ => Err(internal(what)),
    }
}

fn strings(x: SEXP, what: &str) -> savvy::Result<Vec<Option<String>>> {
    match Sexp(x).into_typed() {
        savvy::TypedSexp::String(v) => Ok(v
            .iter()
            .map(|s| (!s.is_na()).then(|| s.to_string()))
            .collect()),
        _ => Err(internal(what)),
    }
}

fn summary(x: SEXP) -> savvy::Result<Summary> {
    let list = match Sexp(x).into_typed() {
        savvy::TypedSexp::List(l) => l,
        _ => return Err(internal("summary")),
    };
    let one = |name: &str| -> savvy::Result<Option<String>> {
        strings(field(&list, name)?, name)?
            .into_iter()
            .next()
            .ok_or_else(|| internal(name))
    };
    let length = match list.get("length").map(|s| s.into_typed()) {
        Some(savvy::TypedSexp::Real(v)) => v.as_slice().first().copied(),
        _ => None,
    }
    .ok_or_else(|| internal("summary length"))?;
    Ok(Summary {
        type_name: one("type")?.unwrap_or_default(),
        class: one("class")?.unwrap_or_default(),
        length,
        dim: one("dim")?,
    })
}

/// The meta blob for `desc`, whose leaf `i` (1-based) is stored in
/// `blocks[i - 1]`, and its decoding.
pub(crate) fn encode_meta(
    desc: &ListSexp,
    blocks: &[BlockDesc],
) -> savvy::Result<(Vec<u8>, meta::Meta)> {
    let mut w = Writer::new(&summary(field(desc, "summary")?)?).map_err(internal)?;
    let kind = ints(field(desc, "kind")?, "kind")?;
    let s4 = ints(field(desc, "s4")?, "s4")?;
    let nattr = ints(field(desc, "nattr")?, "nattr")?;
    let aname = field(desc, "aname")?;
    let len = match Sexp(field(desc, "len")?).into_typed() {
        savvy::TypedSexp::Real(v) => v.as_slice().to_vec(),
        _ => return Err(internal("len")),
    };
    let data = field(desc, "data")?;
    let n = kind.len();
    // SAFETY: reads the lengths and types of vectors R passed in.
    let (aname_ok, data_ok) = unsafe {
        (
            TYPEOF(aname) as SEXPTYPE == STRSXP && XLENGTH(aname) as usize == n,
            TYPEOF(data) as SEXPTYPE == VECSXP && XLENGTH(data) as usize == n,
        )
    };
    if s4.len() != n || nattr.len() != n || len.len() != n || !aname_ok || !data_ok {
        return Err(internal("columns of different lengths"));
    }
    for i in 0..n {
        // SAFETY: i < n = the length of both vectors.
        let (name, value) = unsafe {
            (
                STRING_ELT(aname, i as R_xlen_t),
                VECTOR_ELT(data, i as R_xlen_t),
            )
        };
        if let Some((bytes, _)) = char_elt(name) {
            w.attr_name(bytes).map_err(internal)?;
        }
        let payload = match kind[i] as u8 {
            meta::KIND_NULL => Payload::Null,
            meta::KIND_S4OBJ => Payload::S4Object,
            meta::KIND_LIST => Payload::List(len[i] as u64),
            meta::KIND_BLOCK => {
                let leaf = ints(value, "leaf index")?;
                let index = leaf
                    .first()
                    .and_then(|&j| usize::try_from(j).ok())
                    .and_then(|j| j.checked_sub(1))
                    .filter(|&j| j < blocks.len())
                    .ok_or_else(|| internal("leaf index"))?;
                Payload::Block {
                    index: index as u32,
                    elem: blocks[index].elem,
                }
            }
            k => inline_payload(value, k)?,
        };
        let n_attrs = u32::try_from(nattr[i]).map_err(|_| internal("nattr"))?;
        w.node(&payload, s4[i] != 0, n_attrs).map_err(internal)?;
    }
    let bytes = w.finish();
    let decoded = meta::decode(&bytes, blocks.len()).map_err(internal)?;
    Ok((bytes, decoded))
}

/// An atomic vector's data as an inline payload.
fn inline_payload(x: SEXP, kind: u8) -> savvy::Result<Payload> {
    let want = match kind {
        meta::KIND_LGL => LGLSXP,
        meta::KIND_INT => INTSXP,
        meta::KIND_DBL => REALSXP,
        meta::KIND_CPLX => CPLXSXP,
        meta::KIND_RAW => RAWSXP,
        meta::KIND_STR => STRSXP,
        k => return Err(internal(format!("node kind {k}"))),
    };
    // SAFETY: header reads of a valid SEXP.
    let (t, n, alt) = unsafe { (TYPEOF(x) as SEXPTYPE, XLENGTH(x) as usize, ALTREP(x) != 0) };
    if t != want {
        return Err(internal("inline value of the wrong type"));
    }
    if want == STRSXP {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let c = string_elt(x, i as R_xlen_t, alt)?;
            v.push(char_elt(c).map(|(b, e)| (b.to_vec(), e)));
        }
        return Ok(Payload::Character(v));
    }
    let p = typed_pointer(x, want, alt)?;
    // SAFETY: `p` points at the n elements of x (alive), of the type `want`.
    unsafe {
        Ok(match kind {
            meta::KIND_LGL => Payload::Logical(slice(p as *const i32, n).to_vec()),
            meta::KIND_INT => Payload::Integer(slice(p as *const i32, n).to_vec()),
            meta::KIND_DBL => Payload::Double(slice(p as *const f64, n).to_vec()),
            meta::KIND_CPLX => Payload::Complex(
                slice(p as *const Rcomplex, n)
                    .iter()
                    .map(|c| [c.r, c.i])
                    .collect(),
            ),
            _ => Payload::Raw(slice(p as *const u8, n).to_vec()),
        })
    }
}

/// # Safety
/// `p` points at `n` valid `T`s (or `n` is 0).
unsafe fn slice<'a, T>(p: *const T, n: usize) -> &'a [T] {
    if n == 0 {
        return &[];
    }
    // SAFETY: see the function's contract.
    unsafe { std::slice::from_raw_parts(p, n) }
}

/// The data pointer of a non-string vector of type `t` through its typed
/// accessor. An ALTREP vector may allocate to produce it: that happens under
/// unwind protection.
fn typed_pointer(x: SEXP, t: SEXPTYPE, alt: bool) -> savvy::Result<*const c_void> {
    // SAFETY: typed accessor matching x's type.
    let get = || unsafe {
        match t {
            LGLSXP => LOGICAL(x) as *const c_void,
            INTSXP => INTEGER(x) as *const c_void,
            REALSXP => REAL(x) as *const c_void,
            CPLXSXP => COMPLEX(x) as *const c_void,
            _ => RAW(x) as *const c_void,
        }
    };
    if !alt {
        return Ok(get());
    }
    // SAFETY: an R error longjmps into unwind protection, past no Rust-owned
    // values.
    unsafe { protected(get) }
}

/// `STRING_ELT(x, i)`; for an ALTREP vector (whose Elt method may allocate)
/// under unwind protection. The CHARSXP is read before anything else
/// allocates.
fn string_elt(x: SEXP, i: R_xlen_t, alt: bool) -> savvy::Result<SEXP> {
    if !alt {
        // SAFETY: i < XLENGTH(x); a plain STRSXP's element read.
        return Ok(unsafe { STRING_ELT(x, i) });
    }
    // SAFETY: as in `typed_pointer`.
    unsafe { protected(|| STRING_ELT(x, i)) }
}
