//! Everything that touches R: savvy functions, ALTREP classes, the
//! Rf_allocVector3 allocator, error -> condition.
//!
//! Each submodule is one topic; this file lists them and holds the package's
//! one `#[savvy_init]` function (registrations that need the `DllInfo`).

mod error;
mod heap_handle;

use savvy::ffi::DllInfo;
use savvy::savvy_init;

/// Called once when R loads the shared library.
#[savvy_init]
fn init_rfmalloc(_dll_info: *mut DllInfo) -> savvy::Result<()> {
    Ok(())
}
