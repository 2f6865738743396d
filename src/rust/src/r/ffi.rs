//! Raw declarations of the parts of R's C API that savvy 0.11 does not expose
//! for R 4.2: the ALTREP class API (`R_ext/Altrep.h`), `Rf_allocVector3` with
//! its `R_allocator_t` (`R_ext/Rallocators.h`), external pointers, CHARSXP
//! construction and a few accessors. Every declaration matches R 4.2's headers
//! in `/usr/share/R/include`; nothing outside `r/` may use them.
//!
//! Only the `SEXP` type comes from savvy, so values pass freely between savvy
//! and these functions.

#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code
)]

use std::os::raw::{c_char, c_int, c_uint, c_void};

pub use savvy::ffi::SEXP;

pub type R_xlen_t = isize;
pub type Rboolean = c_int;
#[allow(clippy::upper_case_acronyms)]
pub type SEXPTYPE = c_uint;
pub type cetype_t = c_int;
pub type Rbyte = u8;

pub const FALSE: Rboolean = 0;
pub const TRUE: Rboolean = 1;

pub const NILSXP: SEXPTYPE = 0;
pub const SYMSXP: SEXPTYPE = 1;
pub const ENVSXP: SEXPTYPE = 4;
pub const CHARSXP: SEXPTYPE = 9;
pub const LGLSXP: SEXPTYPE = 10;
pub const INTSXP: SEXPTYPE = 13;
pub const REALSXP: SEXPTYPE = 14;
pub const CPLXSXP: SEXPTYPE = 15;
pub const STRSXP: SEXPTYPE = 16;
pub const VECSXP: SEXPTYPE = 19;
pub const EXTPTRSXP: SEXPTYPE = 22;
pub const RAWSXP: SEXPTYPE = 24;

pub const CE_NATIVE: cetype_t = 0;
pub const CE_UTF8: cetype_t = 1;
pub const CE_LATIN1: cetype_t = 2;
pub const CE_BYTES: cetype_t = 3;

/// `Rcomplex` (R_ext/Complex.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rcomplex {
    pub r: f64,
    pub i: f64,
}

/// `R_altrep_class_t` with `STRUCT_SUBTYPES` (R_ext/Altrep.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct R_altrep_class_t {
    pub ptr: SEXP,
}

/// `struct R_allocator` (R_ext/Rallocators.h). R copies this struct into the
/// first `size_of::<R_allocator_t>()` bytes of every block it gets from
/// `mem_alloc` and later calls `mem_free(copy, copy)` with that copy.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct R_allocator_t {
    pub mem_alloc: Option<unsafe extern "C" fn(*mut R_allocator_t, usize) -> *mut c_void>,
    pub mem_free: Option<unsafe extern "C" fn(*mut R_allocator_t, *mut c_void)>,
    /// Reserved; must be NULL.
    pub res: *mut c_void,
    pub data: *mut c_void,
}

pub type DllInfo = c_void;
pub type R_CFinalizer_t = Option<unsafe extern "C" fn(SEXP)>;
pub type InspectSubtree = Option<unsafe extern "C" fn(SEXP, c_int, c_int, c_int)>;

// ALTREP method types (R_ext/Altrep.h).
pub type Length_m = unsafe extern "C" fn(SEXP) -> R_xlen_t;
pub type Inspect_m = unsafe extern "C" fn(SEXP, c_int, c_int, c_int, InspectSubtree) -> Rboolean;
pub type Duplicate_m = unsafe extern "C" fn(SEXP, Rboolean) -> SEXP;
pub type Serialized_state_m = unsafe extern "C" fn(SEXP) -> SEXP;
pub type Unserialize_m = unsafe extern "C" fn(SEXP, SEXP) -> SEXP;
pub type Dataptr_m = unsafe extern "C" fn(SEXP, Rboolean) -> *mut c_void;
pub type Dataptr_or_null_m = unsafe extern "C" fn(SEXP) -> *const c_void;
pub type Extract_subset_m = unsafe extern "C" fn(SEXP, SEXP, SEXP) -> SEXP;
pub type IntElt_m = unsafe extern "C" fn(SEXP, R_xlen_t) -> c_int;
pub type RealElt_m = unsafe extern "C" fn(SEXP, R_xlen_t) -> f64;
pub type RawElt_m = unsafe extern "C" fn(SEXP, R_xlen_t) -> Rbyte;
pub type ComplexElt_m = unsafe extern "C" fn(SEXP, R_xlen_t) -> Rcomplex;
pub type StringElt_m = unsafe extern "C" fn(SEXP, R_xlen_t) -> SEXP;
pub type StringSetElt_m = unsafe extern "C" fn(SEXP, R_xlen_t, SEXP);
pub type IntRegion_m = unsafe extern "C" fn(SEXP, R_xlen_t, R_xlen_t, *mut c_int) -> R_xlen_t;
pub type RealRegion_m = unsafe extern "C" fn(SEXP, R_xlen_t, R_xlen_t, *mut f64) -> R_xlen_t;
pub type RawRegion_m = unsafe extern "C" fn(SEXP, R_xlen_t, R_xlen_t, *mut Rbyte) -> R_xlen_t;
pub type ComplexRegion_m =
    unsafe extern "C" fn(SEXP, R_xlen_t, R_xlen_t, *mut Rcomplex) -> R_xlen_t;

extern "C" {
    pub static mut R_NilValue: SEXP;
    pub static mut R_NaString: SEXP;
    pub static mut R_BlankString: SEXP;
    pub static mut R_NaInt: c_int;
    pub static mut R_NaReal: f64;

    // Memory and vectors.
    pub fn Rf_allocVector(t: SEXPTYPE, n: R_xlen_t) -> SEXP;
    pub fn Rf_protect(x: SEXP) -> SEXP;
    pub fn Rf_duplicate(x: SEXP) -> SEXP;
    pub fn Rf_unprotect(n: c_int);
    pub fn R_gc();
    pub fn TYPEOF(x: SEXP) -> c_int;
    pub fn XLENGTH(x: SEXP) -> R_xlen_t;
    pub fn IS_LONG_VEC(x: SEXP) -> c_int;
    pub fn DATAPTR_OR_NULL(x: SEXP) -> *const c_void;
    pub fn DATAPTR_RO(x: SEXP) -> *const c_void;
    pub fn STRING_ELT(x: SEXP, i: R_xlen_t) -> SEXP;
    pub fn SET_STRING_ELT(x: SEXP, i: R_xlen_t, v: SEXP);
    pub fn VECTOR_ELT(x: SEXP, i: R_xlen_t) -> SEXP;
    pub fn SET_VECTOR_ELT(x: SEXP, i: R_xlen_t, v: SEXP) -> SEXP;
    pub fn LOGICAL(x: SEXP) -> *mut c_int;
    pub fn INTEGER(x: SEXP) -> *mut c_int;
    pub fn COMPLEX(x: SEXP) -> *mut Rcomplex;
    pub fn REAL(x: SEXP) -> *mut f64;
    pub fn RAW(x: SEXP) -> *mut Rbyte;
    pub fn STRING_PTR_RO(x: SEXP) -> *const SEXP;
    pub fn INTEGER_GET_REGION(x: SEXP, i: R_xlen_t, n: R_xlen_t, buf: *mut c_int) -> R_xlen_t;
    pub fn REAL_GET_REGION(x: SEXP, i: R_xlen_t, n: R_xlen_t, buf: *mut f64) -> R_xlen_t;
    pub fn Rf_ScalarLogical(v: c_int) -> SEXP;
    pub fn Rf_ScalarReal(v: f64) -> SEXP;
    pub fn Rf_ScalarInteger(v: c_int) -> SEXP;
    pub fn Rf_mkString(s: *const c_char) -> SEXP;
    pub fn Rf_inherits(x: SEXP, cls: *const c_char) -> Rboolean;
    pub fn R_existsVarInFrame(rho: SEXP, sym: SEXP) -> Rboolean;
    pub fn R_BindingIsActive(sym: SEXP, rho: SEXP) -> Rboolean;

    // Strings.
    pub fn Rf_mkCharLenCE(s: *const c_char, len: c_int, enc: cetype_t) -> SEXP;
    pub fn Rf_getCharCE(x: SEXP) -> cetype_t;
    pub fn R_CHAR(x: SEXP) -> *const c_char;
    pub fn LENGTH(x: SEXP) -> c_int;

    // External pointers.
    pub fn R_MakeExternalPtr(p: *mut c_void, tag: SEXP, prot: SEXP) -> SEXP;
    pub fn R_ExternalPtrAddr(s: SEXP) -> *mut c_void;
    pub fn R_SetExternalPtrAddr(s: SEXP, p: *mut c_void);
    pub fn R_ClearExternalPtr(s: SEXP);
    pub fn R_RegisterCFinalizerEx(s: SEXP, fun: R_CFinalizer_t, onexit: Rboolean);

    // Errors and output.
    pub fn Rf_error(fmt: *const c_char, ...) -> !;
    /// Resumes an R error caught by `R_UnwindProtect` (its continuation).
    pub fn R_ContinueUnwind(cont: SEXP) -> !;
    pub fn Rprintf(fmt: *const c_char, ...);

    // ALTREP.
    pub fn ALTREP(x: SEXP) -> c_int;
    pub fn R_new_altrep(cls: R_altrep_class_t, data1: SEXP, data2: SEXP) -> SEXP;
    pub fn R_altrep_data1(x: SEXP) -> SEXP;
    pub fn R_altrep_data2(x: SEXP) -> SEXP;
    pub fn R_set_altrep_data1(x: SEXP, v: SEXP);
    pub fn R_set_altrep_data2(x: SEXP, v: SEXP);
    pub fn R_altrep_inherits(x: SEXP, cls: R_altrep_class_t) -> Rboolean;

    pub fn R_make_altinteger_class(
        cname: *const c_char,
        pname: *const c_char,
        dll: *mut DllInfo,
    ) -> R_altrep_class_t;
    pub fn R_make_altreal_class(
        cname: *const c_char,
        pname: *const c_char,
        dll: *mut DllInfo,
    ) -> R_altrep_class_t;
    pub fn R_make_altlogical_class(
        cname: *const c_char,
        pname: *const c_char,
        dll: *mut DllInfo,
    ) -> R_altrep_class_t;
    pub fn R_make_altcomplex_class(
        cname: *const c_char,
        pname: *const c_char,
        dll: *mut DllInfo,
    ) -> R_altrep_class_t;
    pub fn R_make_altraw_class(
        cname: *const c_char,
        pname: *const c_char,
        dll: *mut DllInfo,
    ) -> R_altrep_class_t;
    pub fn R_make_altstring_class(
        cname: *const c_char,
        pname: *const c_char,
        dll: *mut DllInfo,
    ) -> R_altrep_class_t;

    pub fn R_set_altrep_Length_method(cls: R_altrep_class_t, m: Length_m);
    pub fn R_set_altrep_Inspect_method(cls: R_altrep_class_t, m: Inspect_m);
    pub fn R_set_altrep_Duplicate_method(cls: R_altrep_class_t, m: Duplicate_m);
    pub fn R_set_altrep_Serialized_state_method(cls: R_altrep_class_t, m: Serialized_state_m);
    pub fn R_set_altrep_Unserialize_method(cls: R_altrep_class_t, m: Unserialize_m);
    pub fn R_set_altvec_Dataptr_method(cls: R_altrep_class_t, m: Dataptr_m);
    pub fn R_set_altvec_Dataptr_or_null_method(cls: R_altrep_class_t, m: Dataptr_or_null_m);
    pub fn R_set_altvec_Extract_subset_method(cls: R_altrep_class_t, m: Extract_subset_m);
    pub fn R_set_altinteger_Elt_method(cls: R_altrep_class_t, m: IntElt_m);
    pub fn R_set_altinteger_Get_region_method(cls: R_altrep_class_t, m: IntRegion_m);
    pub fn R_set_altlogical_Elt_method(cls: R_altrep_class_t, m: IntElt_m);
    pub fn R_set_altlogical_Get_region_method(cls: R_altrep_class_t, m: IntRegion_m);
    pub fn R_set_altreal_Elt_method(cls: R_altrep_class_t, m: RealElt_m);
    pub fn R_set_altreal_Get_region_method(cls: R_altrep_class_t, m: RealRegion_m);
    pub fn R_set_altraw_Elt_method(cls: R_altrep_class_t, m: RawElt_m);
    pub fn R_set_altraw_Get_region_method(cls: R_altrep_class_t, m: RawRegion_m);
    pub fn R_set_altcomplex_Elt_method(cls: R_altrep_class_t, m: ComplexElt_m);
    pub fn R_set_altcomplex_Get_region_method(cls: R_altrep_class_t, m: ComplexRegion_m);
    pub fn R_set_altstring_Elt_method(cls: R_altrep_class_t, m: StringElt_m);
    pub fn R_set_altstring_Set_elt_method(cls: R_altrep_class_t, m: StringSetElt_m);
}

extern "C" {
    // Named objects (r/named*.rs): symbols, attributes, options, evaluation.
    pub static mut R_GlobalEnv: SEXP;
    pub static mut R_BaseEnv: SEXP;
    pub fn Rf_ScalarString(x: SEXP) -> SEXP;
    pub fn SHALLOW_DUPLICATE_ATTRIB(to: SEXP, from: SEXP);
    pub fn Rf_setAttrib(x: SEXP, name: SEXP, value: SEXP) -> SEXP;
    pub fn Rf_allocS4Object() -> SEXP;
    pub fn Rf_asS4(x: SEXP, flag: Rboolean, complete: c_int) -> SEXP;
    pub fn Rf_isS4(x: SEXP) -> Rboolean;
    pub fn Rf_install(name: *const c_char) -> SEXP;
    pub fn Rf_GetOption1(tag: SEXP) -> SEXP;
    pub fn Rf_lang2(f: SEXP, a: SEXP) -> SEXP;
    pub fn Rf_lang3(f: SEXP, a: SEXP, b: SEXP) -> SEXP;
    pub fn Rf_eval(e: SEXP, rho: SEXP) -> SEXP;
    pub fn R_FindNamespace(name: SEXP) -> SEXP;
}

// The classic path's one non-API entry point (see `r::vector::classic`); left out
// of builds made with `RFMALLOC_CLASSIC=false` (cargo feature `classic`).
#[cfg(feature = "classic")]
extern "C" {
    pub fn Rf_allocVector3(t: SEXPTYPE, n: R_xlen_t, allocator: *mut R_allocator_t) -> SEXP;
}

// R >= 4.5 lists SETLENGTH among its non-API entry points (4.6 no longer
// exports it): only builds for older R (feature `r-pre-4-5`) use it (the classic path keeps R's GC trigger honest with it, see
// `r::vector::classic`).
#[cfg(all(feature = "classic", feature = "r-pre-4-5"))]
extern "C" {
    pub fn SETLENGTH(x: SEXP, n: R_xlen_t);
}

// Entry points whose API form depends on the R version the package is built
// for: `configure` turns on the cargo feature `r-4-5` (R >= 4.5) from the R
// it runs with. Below that version the older function is the documented one.
#[cfg(feature = "r-4-5")]
extern "C" {
    pub fn R_getVarEx(sym: SEXP, rho: SEXP, inherits: Rboolean, ifnfnd: SEXP) -> SEXP;
}
#[cfg(not(feature = "r-4-5"))]
extern "C" {
    fn Rf_findVarInFrame(rho: SEXP, sym: SEXP) -> SEXP;
    static mut R_UnboundValue: SEXP;
}
// R >= 4.6 (feature `r-4-6`): the kind of a binding, read without forcing
// a promise or calling an active binding's function. The C enum
// `R_BindingType_t` is an `int` in the ABI; its values are R's.
#[cfg(feature = "r-4-6")]
extern "C" {
    fn R_GetBindingType(sym: SEXP, env: SEXP) -> std::os::raw::c_int;
}
#[cfg(feature = "r-4-6")]
const R_BINDING_TYPE_VALUE: std::os::raw::c_int = 1;

/// The value bound to `sym` in the frame of `env` itself (no inherited
/// frames), or `R_NilValue` when there is none, when it is an active
/// binding (whose function would run R code) or a promise (forced or not):
/// no R code runs. R >= 4.6 reads the binding's kind first
/// (`R_GetBindingType`). Below R 4.5 a promise comes back as the promise
/// itself (which is no value a caller accepts). R 4.5 has neither: its
/// `R_getVarEx` forces a promise, running R code whose error would jump
/// over Rust frames, so builds for R 4.5 refuse promise bindings in R
/// before calling in (`.ptr_unforced()` in R/error.R).
///
/// # Safety
/// `env` must be an environment and `sym` a symbol.
pub unsafe fn frame_value(env: SEXP, sym: SEXP) -> SEXP {
    // SAFETY: forwarded; the functions only look the binding up, and
    // `R_getVarEx` is called on a plain value binding only, which it
    // returns without evaluating anything.
    unsafe {
        #[cfg(feature = "r-4-6")]
        {
            if R_GetBindingType(sym, env) == R_BINDING_TYPE_VALUE {
                R_getVarEx(sym, env, FALSE, R_NilValue)
            } else {
                R_NilValue
            }
        }
        #[cfg(not(feature = "r-4-6"))]
        {
            if R_existsVarInFrame(env, sym) == 0 || R_BindingIsActive(sym, env) != 0 {
                return R_NilValue;
            }
            #[cfg(feature = "r-4-5")]
            {
                R_getVarEx(sym, env, FALSE, R_NilValue)
            }
            #[cfg(not(feature = "r-4-5"))]
            {
                let v = Rf_findVarInFrame(env, sym);
                if v == R_UnboundValue {
                    R_NilValue
                } else {
                    v
                }
            }
        }
    }
}

/// The data of an ordinary (non-ALTREP) vector, through the typed accessor
/// of its type: writable for atomic types, R's read-only pointer array for
/// character vectors (their elements are set with `SET_STRING_ELT`).
///
/// # Safety
/// `x` must be a vector of one of the six atomic types.
pub unsafe fn data_ptr(x: SEXP) -> *mut c_void {
    // SAFETY: each accessor is called on a vector of its own type.
    unsafe {
        match TYPEOF(x) as SEXPTYPE {
            LGLSXP => LOGICAL(x) as *mut c_void,
            INTSXP => INTEGER(x) as *mut c_void,
            REALSXP => REAL(x) as *mut c_void,
            CPLXSXP => COMPLEX(x) as *mut c_void,
            RAWSXP => RAW(x) as *mut c_void,
            STRSXP => STRING_PTR_RO(x) as *mut c_void,
            _ => std::ptr::null_mut(),
        }
    }
}
