//! Everything that touches R: savvy functions, ALTREP classes, the
//! Rf_allocVector3 allocator, error -> condition.
//!
//! Each submodule is one topic; this file lists them and holds the package's
//! one `#[savvy_init]` function (registrations that need the `DllInfo`).

mod altrep;
mod altstring;
mod batch;
mod classic;
mod error;
mod ffi;
mod heap_handle;
mod named;
mod named_assemble;
mod named_leaf;
mod named_meta;
mod named_ref;
mod vector;

use savvy::ffi::DllInfo;
use savvy::savvy_init;

/// Called once when R loads the shared library.
#[savvy_init]
fn init_rfmalloc(dll_info: *mut DllInfo) -> savvy::Result<()> {
    // SAFETY: R calls the init function once, on its main thread, with the
    // package's DllInfo.
    unsafe { altrep::register(dll_info as *mut std::ffi::c_void) };
    Ok(())
}
