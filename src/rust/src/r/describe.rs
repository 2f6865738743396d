//! How an argument error shows the bad value: `not "foo"`, `not NA`,
//! `not a list of length 2`. The R side has the same helper
//! (`.describe_value()` in R/error.R) for the arguments it checks.

use savvy::{NotAvailableValue, Sexp, TypedSexp};

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
