//! The core error type. Converted to an R condition in exactly one place
//! (`r::error`). Corruption is kept apart from I/O errors and user mistakes.

use std::fmt;
use std::path::PathBuf;

/// Every failure of the heap core.
#[derive(Debug)]
pub enum Error {
    /// The file is not an Rfmalloc heap, or its metadata fail validation.
    /// The file was not modified.
    Corrupt { path: PathBuf, what: String },
    /// A heap whose newest commit is damaged, refused by a writable open
    /// that was not asked to fall back to the previous commit (class
    /// `fmalloc_corrupt` too). The file was not modified.
    Damaged { path: PathBuf, what: String },
    /// Operating-system I/O failure (open, map, sync, ...).
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    /// Another process (or this one, in the other mode) has the heap file
    /// open in a conflicting mode. `detail` says who and what to do.
    Locked { path: PathBuf, detail: String },
    /// The heap is full and could not grow (disk full, size limit, ...).
    Full { requested: u64, detail: String },
    /// A write or allocation was attempted on a heap opened read-only.
    ReadOnly { path: PathBuf },
    /// Allocation attempted from a process forked off the writer.
    Forked { path: PathBuf },
    /// A named object does not exist.
    NotFound { name: String },
    /// A named object already exists (and overwrite was not requested).
    Exists { name: String },
    /// The heap handle was closed.
    Closed { path: PathBuf },
    /// A batch inside the open one was rolled back, and with it every
    /// change of the open one: further changes are refused until it ends
    /// (`ended`: it has, committing nothing).
    RolledBack { ended: bool },
    /// A caller passed an invalid argument (bad name, bad offset, ...).
    Invalid(String),
    /// Something this build or this kind of object cannot do.
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The R condition subclass (added after `fmalloc_error`).
    pub fn class(&self) -> &'static str {
        match self {
            Error::Corrupt { .. } | Error::Damaged { .. } => "fmalloc_corrupt",
            Error::Io { .. } => "fmalloc_io",
            Error::Locked { .. } => "fmalloc_locked",
            Error::Full { .. } => "fmalloc_full",
            Error::ReadOnly { .. } => "fmalloc_readonly",
            Error::Forked { .. } => "fmalloc_forked",
            Error::NotFound { .. } => "fmalloc_not_found",
            Error::Exists { .. } => "fmalloc_exists",
            Error::Closed { .. } => "fmalloc_closed",
            Error::RolledBack { .. } => "fmalloc_rolled_back",
            Error::Invalid(_) => "fmalloc_invalid",
            Error::Unsupported(_) => "fmalloc_unsupported",
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            what: what.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            op,
            source,
        }
    }
}

fn file_name(p: &std::path::Path) -> String {
    p.display().to_string()
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Corrupt { path, what } => write!(
                f,
                "Rfmalloc: '{}' is not a valid Rfmalloc heap ({what}); nothing was changed",
                file_name(path)
            ),
            Error::Damaged { path, what } => write!(
                f,
                "Rfmalloc: heap '{}' is damaged: {what}; nothing was changed",
                file_name(path)
            ),
            Error::Io { path, op, source } => {
                write!(f, "Rfmalloc: cannot {op} '{}': {source}", file_name(path))
            }
            Error::Locked { path, detail } => {
                write!(f, "Rfmalloc: cannot open '{}': {detail}", file_name(path))
            }
            Error::Full { requested, detail } => write!(
                f,
                "Rfmalloc: heap is full, cannot allocate {requested} bytes ({detail})"
            ),
            Error::ReadOnly { path } => write!(
                f,
                "Rfmalloc: heap '{}' is open read-only; reopen it with readonly = FALSE to modify it",
                file_name(path)
            ),
            Error::Forked { path } => write!(
                f,
                "Rfmalloc: cannot allocate, change names or check heap '{}' from a forked child process; do that in the parent (children may read and write existing vectors)",
                file_name(path)
            ),
            Error::NotFound { name } => {
                write!(f, "Rfmalloc: no object named '{name}' in the heap")
            }
            Error::Exists { name } => write!(
                f,
                "Rfmalloc: an object named '{name}' already exists; use overwrite = TRUE to replace it"
            ),
            Error::Closed { path } => {
                write!(f, "Rfmalloc: heap '{}' has been closed", file_name(path))
            }
            Error::RolledBack { ended: false } => write!(
                f,
                "Rfmalloc: a batch inside this batch was rolled back by an error, and with it \
                 every change of this batch: no change is accepted until this batch ends"
            ),
            Error::RolledBack { ended: true } => write!(
                f,
                "Rfmalloc: a batch inside this batch was rolled back by an error, and with it \
                 every change of this batch: nothing of it was committed"
            ),
            Error::Invalid(msg) | Error::Unsupported(msg) => write!(f, "Rfmalloc: {msg}"),
        }
    }
}

impl std::error::Error for Error {}
