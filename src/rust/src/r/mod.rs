//! Everything that touches R: savvy functions, ALTREP classes, the
//! Rf_allocVector3 allocator, error -> condition.
//!
//! Each submodule is one topic; this file lists them and holds the package's
//! one `#[savvy_init]` function (registrations that need the `DllInfo`).

// The layers, from the bottom up: a module uses only those listed before it
// (`bash tools/module-deps.sh` checks that there is no cycle).

/// The `#[savvy]` functions (thin: parse, call the layers below).
mod api;
/// Argument parsing and the checked heap-handle lookup.
mod args;
/// The one error channel: core errors -> R conditions.
mod error;
/// Raw declarations of R's C API.
mod ffi;
/// Named objects: leaves, meta, assembly.
mod named;
/// The one table of R types <-> core element types; encodings; hex.
mod types;
/// Vectors in the heap: ALTREP classes, classic allocator, creation.
mod vector;

use savvy::ffi::DllInfo;
use savvy::savvy_init;

/// Called once when R loads the shared library.
#[savvy_init]
fn init_rfmalloc(dll_info: *mut DllInfo) -> savvy::Result<()> {
    // SAFETY: R calls the init function once, on its main thread, with the
    // package's DllInfo.
    unsafe { vector::altrep::register(dll_info as *mut std::ffi::c_void) };
    Ok(())
}
