//! The one table of R's vector types: for each core [`ElemType`] R can
//! hold, its `SEXPTYPE`, the name R code uses (`create_fmalloc_vector(type
//! = ...)`, `.fmalloc_inspect()`) and its ALTREP class; plus the other
//! fixed correspondences between R and the core (string encodings, heap
//! ids shown as hex). Every other `r::` module asks here instead of
//! matching on types itself.

use crate::heap::ElemType;
use crate::r::ffi::*;
use crate::strpool::{self, Encoding};
use savvy::{NotAvailableValue, Sexp, TypedSexp};

/// One R vector type.
pub(crate) struct RType {
    pub(crate) elem: ElemType,
    pub(crate) sexptype: SEXPTYPE,
    /// `typeof()` of such a vector ("character" for strings).
    pub(crate) name: &'static str,
    /// The ALTREP class of its fmalloc vectors, NUL-terminated.
    pub(crate) class: &'static str,
}

/// Every element type that is an R vector type, in ALTREP class order
/// (`r::vector::altrep` registers one class per row, in this order).
pub(crate) const TYPES: [RType; 6] = [
    RType {
        elem: ElemType::Logical,
        sexptype: LGLSXP,
        name: "logical",
        class: "fmalloc_logical\0",
    },
    RType {
        elem: ElemType::Integer,
        sexptype: INTSXP,
        name: "integer",
        class: "fmalloc_integer\0",
    },
    RType {
        elem: ElemType::Double,
        sexptype: REALSXP,
        name: "double",
        class: "fmalloc_real\0",
    },
    RType {
        elem: ElemType::Complex,
        sexptype: CPLXSXP,
        name: "complex",
        class: "fmalloc_complex\0",
    },
    RType {
        elem: ElemType::Raw,
        sexptype: RAWSXP,
        name: "raw",
        class: "fmalloc_raw\0",
    },
    RType {
        elem: ElemType::String,
        sexptype: STRSXP,
        name: "character",
        class: "fmalloc_string\0",
    },
];

/// The row of `elem` in [`TYPES`] (`None` for opaque bytes, which are no R
/// vector type).
pub(crate) fn class_index(elem: ElemType) -> Option<usize> {
    TYPES.iter().position(|t| t.elem == elem)
}

/// The `SEXPTYPE` of vectors of `elem` (opaque bytes read as raw).
pub(crate) fn sexptype(elem: ElemType) -> SEXPTYPE {
    match class_index(elem) {
        Some(i) => TYPES[i].sexptype,
        None => RAWSXP,
    }
}

/// The element type of R vectors of type `t`, if fmalloc can hold them.
pub(crate) fn elem_of_sexptype(t: SEXPTYPE) -> Option<ElemType> {
    TYPES.iter().find(|r| r.sexptype == t).map(|r| r.elem)
}

/// The element type R code names `name` (`"numeric"` is `"double"`).
pub(crate) fn elem_from_name(name: &str) -> Option<ElemType> {
    let name = if name == "numeric" { "double" } else { name };
    TYPES.iter().find(|r| r.name == name).map(|r| r.elem)
}

/// The name of `elem` shown to R ("bytes" for opaque bytes).
pub(crate) fn type_name(elem: ElemType) -> &'static str {
    class_index(elem).map_or("bytes", |i| TYPES[i].name)
}

/// The names `elem_from_name` accepts, for messages.
pub(crate) const TYPE_NAMES_HELP: &str =
    "\"logical\", \"integer\", \"numeric\", \"double\", \"complex\", \"raw\", \"character\"";

/// R's encoding mark for a stored string's encoding.
pub(crate) fn cetype(e: Encoding) -> cetype_t {
    match e {
        Encoding::Native => CE_NATIVE,
        Encoding::Utf8 => CE_UTF8,
        Encoding::Latin1 => CE_LATIN1,
        Encoding::Bytes => CE_BYTES,
    }
}

/// The stored encoding of a string R marked `ce` (unknown marks: native).
pub(crate) fn encoding(ce: cetype_t) -> Encoding {
    match ce {
        CE_UTF8 => Encoding::Utf8,
        CE_LATIN1 => Encoding::Latin1,
        CE_BYTES => Encoding::Bytes,
        _ => Encoding::Native,
    }
}

/// A CHARSXP as a pool element: bytes and encoding, `None` for NA.
pub(crate) fn char_elt<'a>(c: SEXP) -> strpool::Elt<'a> {
    // SAFETY: c is a CHARSXP of a live vector; R_CHAR/LENGTH/Rf_getCharCE
    // only read it and never allocate or raise errors.
    unsafe {
        if c == R_NaString {
            return None;
        }
        let len = LENGTH(c).max(0) as usize;
        let bytes = std::slice::from_raw_parts(R_CHAR(c) as *const u8, len);
        Some((bytes, encoding(Rf_getCharCE(c))))
    }
}

/// Bytes as lowercase hex (heap ids, as R shows them).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// How an argument error shows the bad value: `not "foo"`, `not NA`,
// `not a list of length 2`. The R side has the same helper
// (`.describe_value()` in R/error.R) for the arguments it checks.

/// Longest string shown in full.
const MAX_SHOWN: usize = 40;

/// A short description of the R value `x` for an error message.
pub(crate) fn describe(x: Sexp) -> String {
    let sized = |what: &str, n: usize| {
        let a = if what.starts_with('i') { "an" } else { "a" };
        format!("{a} {what} vector of length {n}")
    };
    match x.into_typed() {
        TypedSexp::Null(_) => "NULL".into(),
        TypedSexp::String(s) if s.len() == 1 => match s.iter().next() {
            Some(v) if v.is_na() => "NA".into(),
            Some(v) if v.chars().count() > MAX_SHOWN => {
                let head: String = v.chars().take(MAX_SHOWN).collect();
                format!("{:?}", head + "...")
            }
            Some(v) => format!("{v:?}"),
            None => "NA".into(),
        },
        TypedSexp::Real(r) if r.len() == 1 => {
            let v = r.as_slice()[0];
            if v.is_na() {
                "NA".into()
            } else {
                format!("{v}")
            }
        }
        TypedSexp::Integer(i) if i.len() == 1 => match i.as_slice()[0] {
            i32::MIN => "NA".into(),
            v => format!("{v}L"),
        },
        TypedSexp::Logical(l) if l.len() == 1 => match l.as_slice_raw()[0] {
            i32::MIN => "NA".into(),
            0 => "FALSE".into(),
            _ => "TRUE".into(),
        },
        TypedSexp::String(s) => sized("character", s.len()),
        TypedSexp::Real(r) => sized("double", r.len()),
        TypedSexp::Integer(i) => sized("integer", i.len()),
        TypedSexp::Logical(l) => sized("logical", l.len()),
        TypedSexp::Raw(r) => sized("raw", r.len()),
        TypedSexp::List(l) => format!("a list of length {}", l.len()),
        TypedSexp::Function(_) => "a function".into(),
        TypedSexp::Environment(_) => "an environment".into(),
        _ => "an object of another type".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names() {
        assert_eq!(elem_from_name("numeric"), Some(ElemType::Double));
        assert_eq!(elem_from_name("double"), Some(ElemType::Double));
        assert_eq!(elem_from_name("character"), Some(ElemType::String));
        assert_eq!(elem_from_name("list"), None);
        assert_eq!(elem_from_name("bytes"), None);
        assert_eq!(type_name(ElemType::Bytes), "bytes");
        for t in &TYPES {
            assert_eq!(elem_from_name(t.name), Some(t.elem));
            assert_eq!(elem_of_sexptype(t.sexptype), Some(t.elem));
            assert_eq!(sexptype(t.elem), t.sexptype);
            assert_eq!(type_name(t.elem), t.name);
            assert!(t.class.ends_with('\0'));
            assert!(TYPE_NAMES_HELP.contains(&format!("\"{}\"", t.name)));
        }
        assert_eq!(sexptype(ElemType::Bytes), RAWSXP);
        assert_eq!(elem_of_sexptype(VECSXP), None);
    }

    #[test]
    fn encodings_round_trip() {
        for e in [
            Encoding::Native,
            Encoding::Utf8,
            Encoding::Latin1,
            Encoding::Bytes,
        ] {
            assert_eq!(encoding(cetype(e)), e);
        }
    }

    #[test]
    fn heap_ids_print_as_lowercase_hex() {
        let mut id = [0u8; 16];
        id[0] = 0xab;
        id[15] = 0x01;
        assert_eq!(hex(&id), "ab000000000000000000000000000001");
        assert_eq!(hex(&[0x0f, 0xa0, 0x00]), "0fa000");
    }
}
