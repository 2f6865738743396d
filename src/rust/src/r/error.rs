//! The one place where a core [`Error`] becomes an R error.
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
//! The crate enables savvy's `use-custom-error` feature. That removes savvy's
//! blanket `From<E: std::error::Error>`, so `?` on a core `Result` inside a
//! `#[savvy]` function goes through the `From` below and keeps its class;
//! any other error type must be converted on purpose (wrap it in a core
//! `Error`, or use `savvy_err!` for an unclassed message).

use crate::error::Error;

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

/// A user mistake detected at the boundary (class `fmalloc_invalid`).
pub(crate) fn invalid(msg: impl Into<String>) -> savvy::Error {
    Error::Invalid(msg.into()).into()
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
}
