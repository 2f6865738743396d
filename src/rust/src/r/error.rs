//! The one place where a failure in Rust becomes an R error.
//!
//! savvy 0.11 hands R only a message string: its C wrapper calls
//! `Rf_errorcall(R_NilValue, "%s", msg)`, which signals a plain
//! `simpleError`. So the condition class travels inside the message as a
//! machine-readable tag,
//!
//! ```text
//! <fmalloc_corrupt> Rfmalloc: 'x.bin' is not a valid Rfmalloc heap (...)
//! ```
//!
//! and `.rfm()` in R/error.R, which wraps every call into Rust, strips the tag
//! and re-signals a condition of class
//! `c("fmalloc_corrupt", "fmalloc_error", "error", "condition")`.
//!
//! **The returned form.** Where a call must not be wrapped in `.rfm()` (the
//! hot path of `create_fmalloc_vector()`, whose wrapper would cost more than
//! making a small vector; `fmalloc_get()`, whose wrapper's promise would make
//! the result look shared and defeat in-place writes; `fmalloc_open()`, whose
//! first call in a session is mostly R lazy-loading the functions it calls,
//! `.rfm()` among them), the `#[savvy]`
//! function returns the same tagged message instead of raising it: a string
//! of class `fmalloc_failure`, made by [`returned_form`] only. The R caller tests
//! for it and hands it to `.fmalloc_raise()`, the same decoder `.rfm()` and
//! the ALTREP methods use. So there is one mechanism -- the tag, decoded by
//! `.fmalloc_raise()` into a condition of class
//! `c(<subclass>, "fmalloc_error", "error", "condition")` -- with a raised and
//! a returned form.
//!
//! **Callbacks.** Code R calls itself (ALTREP methods: Elt, Set_elt,
//! Dataptr, Serialized_state, ...) cannot return a `savvy::Error`. Its body
//! runs under [`guard`], whose error type [`Failure`] is again the tagged
//! message (or an R error raised inside, resumed as it is); `guard` hands
//! the message to `.fmalloc_raise()` once every Rust value of the body has
//! been dropped.
//!
//! **Every message is tagged.** A message built here always carries a
//! class: a core [`Error`]'s, or `fmalloc_internal` for what can only be a
//! bug in Rfmalloc (a panic, an impossible state; [`internal`]), so no
//! failure reaches R as a bare `simpleError`. A message without a tag (from
//! savvy itself) is tagged `fmalloc_internal` on its way out.
//!
//! The crate enables savvy's `use-custom-error` feature. That removes savvy's
//! blanket `From<E: std::error::Error>`, so `?` on a core `Result` inside a
//! `#[savvy]` function goes through the `From` below and keeps its class;
//! any other error type must be converted on purpose (wrap it in a core
//! `Error`, or [`internal`]).

use std::os::raw::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

use savvy::unwind_protect::unwind_protect;
use savvy::{OwnedStringSexp, Sexp};

use crate::error::Error;
use crate::r::ffi::*;

impl From<Error> for savvy::Error {
    fn from(e: Error) -> Self {
        savvy::Error::new(tagged_message(&e))
    }
}

/// The message R receives for `e`: `<class> message`. R/error.R parses it
/// with the pattern `^<(fmalloc_[a-z_]+)> `.
pub(crate) fn tagged_message(e: &Error) -> String {
    format!("<{}> {e}", e.class())
}

/// The class of errors that can only be a bug in Rfmalloc.
pub(crate) const INTERNAL_CLASS: &str = "fmalloc_internal";

/// The tagged message of an internal error (class `fmalloc_internal`).
fn internal_message(what: &str) -> String {
    format!("<{INTERNAL_CLASS}> Rfmalloc: internal error: {what} (please report this)")
}

/// An internal error (class `fmalloc_internal`): a state Rfmalloc never
/// makes, or a panic.
pub(crate) fn internal(what: impl std::fmt::Display) -> savvy::Error {
    savvy::Error::new(internal_message(&what.to_string()))
}

/// Whether `msg` starts with a tag R/error.R decodes (`<fmalloc_x> `).
fn has_tag(msg: &str) -> bool {
    msg.strip_prefix("<fmalloc_")
        .and_then(|rest| rest.split_once("> "))
        .is_some_and(|(name, _)| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
}

/// The tagged message of any savvy error but an R error (`Aborted`): its
/// own when it has a tag (a core error converted by the `From` above), an
/// internal error's otherwise (savvy's own messages).
fn message_of(e: &savvy::Error) -> String {
    let msg = e.to_string();
    if has_tag(&msg) {
        msg
    } else {
        internal_message(&msg)
    }
}

/// The returned form of an error (see the module docs): `Ok` passes
/// through; an R error raised inside the call (`Aborted`) is resumed as it
/// is; any other error becomes its tagged message as a string of class
/// `fmalloc_failure`, for `.fmalloc_raise()` in R.
pub(crate) fn returned_form(result: savvy::Result<Sexp>) -> savvy::Result<Sexp> {
    match result {
        Ok(x) => Ok(x),
        Err(e @ savvy::Error::Aborted(_)) => Err(e),
        Err(e) => {
            let mut failure = OwnedStringSexp::try_from(message_of(&e).as_str())?;
            failure.set_class([FAILURE_CLASS])?;
            failure.into()
        }
    }
}

/// The class of a returned error (R/error.R tests for it).
pub(crate) const FAILURE_CLASS: &str = "fmalloc_failure";

/// A user mistake detected at the boundary (class `fmalloc_invalid`).
pub(crate) fn invalid(msg: impl Into<String>) -> savvy::Error {
    Error::Invalid(msg.into()).into()
}

/// Why a callback body failed (see the module docs): a tagged message, or
/// an R error raised inside it (the continuation token to resume).
pub(crate) enum Failure {
    Tagged(String),
    Aborted(SEXP),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Tagged(tagged_message(&e))
    }
}

impl From<savvy::Error> for Failure {
    fn from(e: savvy::Error) -> Self {
        match e {
            savvy::Error::Aborted(token) => Failure::Aborted(token),
            e => Failure::Tagged(message_of(&e)),
        }
    }
}

impl Failure {
    /// An internal error (class `fmalloc_internal`).
    pub(crate) fn internal(what: &str) -> Self {
        Failure::Tagged(internal_message(what))
    }
}

/// Raises the tagged message `msg` as an R condition through
/// `.fmalloc_raise()` (R/error.R), like every other Rust error.
///
/// The caller must hold no Rust values with destructors: R longjmps out.
fn raise(msg: &str) -> ! {
    let len = msg.len().min(i32::MAX as usize) as c_int;
    // SAFETY: plain R API calls on R's main thread; every new object is
    // protected while the next is allocated. `.fmalloc_raise()` always
    // signals an error, so `Rf_eval` does not return; the `Rf_error` below
    // (never reached) only keeps this function from returning.
    unsafe {
        let text = Rf_protect(Rf_allocVector(STRSXP, 1));
        SET_STRING_ELT(
            text,
            0,
            Rf_mkCharLenCE(msg.as_ptr() as *const c_char, len, CE_UTF8),
        );
        let pkg = Rf_protect(Rf_mkString(c"Rfmalloc".as_ptr()));
        let ns = Rf_protect(R_FindNamespace(pkg));
        let call = Rf_protect(Rf_lang3(
            Rf_install(c".fmalloc_raise".as_ptr()),
            text,
            R_NilValue,
        ));
        Rf_eval(call, ns);
        Rf_error(c"%s".as_ptr(), R_CHAR(STRING_ELT(text, 0)))
    }
}

/// Runs a callback body (an ALTREP method, called by R itself). A panic or
/// an `Err` becomes an R error of its class, raised after the body (and its
/// values) are gone; an R error raised inside the body is resumed.
pub(crate) fn guard<T>(f: impl FnOnce() -> Result<T, Failure>) -> T {
    let msg = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => return v,
        Ok(Err(Failure::Tagged(msg))) => msg,
        // SAFETY: the token of an R error caught by unwind protection in
        // the body; nothing of the body is left to drop.
        Ok(Err(Failure::Aborted(token))) => unsafe { R_ContinueUnwind(token) },
        Err(_) => internal_message("a panic in an ALTREP method"),
    };
    // The message moves to the stack: `raise` longjmps, so no heap value
    // may be live.
    let mut buf = [0u8; 1024];
    let mut n = msg.len().min(buf.len());
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    buf[..n].copy_from_slice(&msg.as_bytes()[..n]);
    drop(msg);
    raise(std::str::from_utf8(&buf[..n]).unwrap_or("<fmalloc_internal> Rfmalloc: internal error"))
}

/// Runs `f` (R API calls that may raise an R error) under savvy's unwind
/// protection and returns what it made; an R error comes back as
/// `savvy::Error::Aborted` (savvy resumes it in R). The value travels
/// through a cell, not as `R_UnwindProtect`'s result: R stores that result
/// in the continuation token (`SETCAR`), which would leave a new vector
/// with a reference count of 2 -- and R would copy it on its first in-place
/// modification instead of writing to the heap.
///
/// # Safety
/// `f` may longjmp only through R errors; it must own no Rust values with
/// destructors.
pub(crate) unsafe fn protected<T: Copy>(f: impl Fn() -> T + Copy) -> savvy::Result<T> {
    let out = std::cell::Cell::new(None);
    let slot = &out;
    // SAFETY: forwarded to the caller; the closure returns R_NilValue.
    unsafe {
        unwind_protect(|| {
            slot.set(Some(f()));
            R_NilValue
        })?;
    }
    out.get()
        .ok_or_else(|| internal("unwind protection returned no value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_is_tagged_in_the_form_r_parses() {
        let errors = [
            Error::corrupt("/tmp/a.bin", "bad magic"),
            Error::Locked {
                path: "/tmp/a.bin".into(),
                detail: "writer".into(),
            },
            Error::NotFound { name: "x".into() },
            Error::Invalid("size_gb must be positive".into()),
        ];
        for e in &errors {
            let msg = tagged_message(e);
            let tag = format!("<{}> ", e.class());
            assert!(msg.starts_with(&tag), "{msg}");
            let rest = &msg[tag.len()..];
            assert_eq!(rest, e.to_string());
            assert!(rest.starts_with("Rfmalloc: "));
            // The class is what R's pattern `fmalloc_[a-z_]+` accepts.
            let class = e.class();
            assert!(class.starts_with("fmalloc_"));
            assert!(class.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }

    #[test]
    fn conversion_to_savvy_keeps_the_tag() {
        let e: savvy::Error = Error::Closed {
            path: "/tmp/h.bin".into(),
        }
        .into();
        assert_eq!(
            e.to_string(),
            "<fmalloc_closed> Rfmalloc: heap '/tmp/h.bin' has been closed"
        );
        assert!(invalid("bad")
            .to_string()
            .starts_with("<fmalloc_invalid> Rfmalloc: bad"));
    }

    #[test]
    fn every_message_has_a_tag() {
        let tagged: savvy::Error = Error::NotFound { name: "x".into() }.into();
        assert_eq!(message_of(&tagged), tagged.to_string());
        // savvy's own messages, and internal errors, are fmalloc_internal.
        for e in [savvy::Error::new("Unexpected type"), internal("no pool")] {
            let msg = message_of(&e);
            assert!(
                msg.starts_with("<fmalloc_internal> Rfmalloc: internal error: "),
                "{msg}"
            );
            assert!(has_tag(&msg));
        }
        assert!(!has_tag("<fmalloc_> x"));
        assert!(!has_tag("Rfmalloc: untagged"));
        assert!(!has_tag("<fmalloc_Bad> x"));
        match Failure::from(Error::Invalid("bad".into())) {
            Failure::Tagged(m) => assert!(m.starts_with("<fmalloc_invalid> ")),
            Failure::Aborted(_) => panic!("not an R error"),
        }
        match Failure::internal("impossible") {
            Failure::Tagged(m) => assert!(has_tag(&m) && m.starts_with("<fmalloc_internal> ")),
            Failure::Aborted(_) => panic!("not an R error"),
        }
    }
}
