//! The ALTREP classes of fmalloc vectors, one per type: `fmalloc_logical`,
//! `fmalloc_integer`, `fmalloc_real`, `fmalloc_complex`, `fmalloc_raw` and
//! `fmalloc_string` (its element methods live in `altstring.rs`). [`register`]
//! creates them once, from the package's init function.
//!
//! What an instance holds:
//!
//! - **data1**: the node that owns a boxed [`VecData`] (see
//!   [`new_instance`]: a raw vector of one pointer that R allocates through
//!   a custom allocator over `malloc`, or an external pointer in builds
//!   without `Rf_allocVector3`): a clone of the
//!   [`Heap`] (which keeps the mapping alive, invariant 3), where the
//!   elements are ([`Store`]: a block and the offset of element 0, or the
//!   shared [`Pool`] of a character vector), the length, the element type
//!   and whether the heap is read-only. When R collects the vector, the
//!   owner's collection drops the data: it releases the vector's reference
//!   to the block (the allocator frees an unnamed block, so GC returns heap
//!   space) and drops the heap clone (the last clone of a closed heap
//!   unmaps it). Every
//!   vector over one string pool shares one [`Pool`] (`crate::pool`): where
//!   the pool lives is never copied into a vector, so growth through one
//!   handle is seen by all.
//!
//!   Both nodes (the ALTREP instance and the owner) are in process memory
//!   (R's heap, and `malloc` for the owner), never in the file; the heap
//!   block holds the elements only. That is
//!   what makes forks safe (invariant 6): a forked child's garbage
//!   collector writes mark bits and GC links into its own copy-on-write
//!   copies of these nodes, never into the shared file mapping. (Fresh
//!   vectors once kept their data in a classic RAWSXP allocated in the heap
//!   by `Rf_allocVector3`; its header sat in the shared mapping, and a
//!   child's GC corrupted the parent's nodes.) A child's writes to the
//!   elements go through the shared mapping: they reach the file and the
//!   parent sees them (parallel fill by `mclapply`).
//! - **data2**: `R_NilValue`, or an ordinary R vector of the same type and
//!   length that replaced the mapping *for this vector only*: the private
//!   copy made when R asks a read-only vector for a writable pointer
//!   (nothing may ever write through a read-only mapping), or, for
//!   character vectors, the expanded STRSXP made when R asks for a data
//!   pointer (a string pool holds bytes, not CHARSXP pointers). Once data2
//!   is set every method reads and writes it. Whether a vector has such a
//!   copy, and the address of its elements, are derived from data2 on every
//!   call ([`private_copy`], [`cur`]), never cached: a cached pointer goes
//!   stale when a pool grows. An expanded character copy of a writable
//!   vector is refreshed from the pool when another view wrote it
//!   ([`Pool::generation`]).
//!
//! Methods: Length, Inspect (class, heap path, block, offset, length),
//! Dataptr (the mapped address, so in-place writes land in the file),
//! Dataptr_or_null, Elt, Get_region, Duplicate (an ordinary copy: R's
//! default would ask the source for a writable pointer) and
//! Serialized_state, which returns C `NULL` so R serializes the expanded
//! vector by value (readable without Rfmalloc), unless a reference to a
//! named block was asked for (Serialized_state / Unserialize delegate to
//! `r::vector::serialize`).
//!
//! Callbacks never panic or unwind into R: each body runs under
//! `r::error::guard`, which turns a panic or an error into an R condition of its
//! class (through `.fmalloc_raise()`, like every Rust error), raised after
//! every Rust value of the body has been dropped.

use std::os::raw::{c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use crate::error::Error;
use crate::heap::{BlockDesc, ElemType, Heap};
use crate::pool::{Hold, Pool};
use crate::r::error::{guard, internal};
use crate::r::ffi::*;
use crate::r::types::{class_index, sexptype, TYPES};
use crate::r::vector::altstring;
use crate::r::vector::data::{cur, data_of, new_instance, private_copy, vd, Store, VecData};
use crate::r::vector::serialize;
use crate::strpool;

/// The six classes, indexed by [`class_index`].
struct Classes([R_altrep_class_t; 6]);
// SAFETY: the class handles are created once at load time and only read
// afterwards, on R's main thread.
unsafe impl Sync for Classes {}
unsafe impl Send for Classes {}

static CLASSES: OnceLock<Classes> = OnceLock::new();

/// Registers the ALTREP classes. Called once from the package's init.
///
/// # Safety
/// Must be called on R's main thread with the package's `DllInfo`.
pub(crate) unsafe fn register(dll: *mut DllInfo) {
    let pkg = c"Rfmalloc".as_ptr();
    let name = |i: usize| TYPES[i].class.as_ptr() as *const c_char;
    // SAFETY: R's class constructors with NUL-terminated names and the
    // DllInfo R passed to the init function.
    let classes = unsafe {
        [
            R_make_altlogical_class(name(0), pkg, dll),
            R_make_altinteger_class(name(1), pkg, dll),
            R_make_altreal_class(name(2), pkg, dll),
            R_make_altcomplex_class(name(3), pkg, dll),
            R_make_altraw_class(name(4), pkg, dll),
            R_make_altstring_class(name(5), pkg, dll),
        ]
    };
    // SAFETY: every method below has the signature R_ext/Altrep.h declares
    // for its setter; the classes were just created.
    unsafe {
        for cls in classes {
            R_set_altrep_Inspect_method(cls, inspect);
            R_set_altrep_Duplicate_method(cls, duplicate);
            R_set_altrep_Serialized_state_method(cls, serialized_state);
            R_set_altrep_Unserialize_method(cls, unserialize);
            R_set_altvec_Dataptr_method(cls, dataptr);
            R_set_altvec_Dataptr_or_null_method(cls, dataptr_or_null);
        }
        let [lgl, int, real, cplx, raw, string] = classes;
        R_set_altrep_Length_method(lgl, length);
        R_set_altrep_Length_method(int, length);
        R_set_altrep_Length_method(real, length);
        R_set_altrep_Length_method(cplx, length);
        R_set_altrep_Length_method(raw, length);
        R_set_altrep_Length_method(string, length);
        R_set_altlogical_Elt_method(lgl, elt::<c_int>);
        R_set_altlogical_Get_region_method(lgl, get_region::<c_int>);
        R_set_altinteger_Elt_method(int, elt::<c_int>);
        R_set_altinteger_Get_region_method(int, get_region::<c_int>);
        R_set_altreal_Elt_method(real, elt::<f64>);
        R_set_altreal_Get_region_method(real, get_region::<f64>);
        R_set_altcomplex_Elt_method(cplx, elt::<Rcomplex>);
        R_set_altcomplex_Get_region_method(cplx, get_region::<Rcomplex>);
        R_set_altraw_Elt_method(raw, elt::<Rbyte>);
        R_set_altraw_Get_region_method(raw, get_region::<Rbyte>);
        R_set_altvec_Extract_subset_method(lgl, extract_subset::<c_int>);
        R_set_altvec_Extract_subset_method(int, extract_subset::<c_int>);
        R_set_altvec_Extract_subset_method(real, extract_subset::<f64>);
        R_set_altvec_Extract_subset_method(cplx, extract_subset::<Rcomplex>);
        R_set_altvec_Extract_subset_method(raw, extract_subset::<Rbyte>);
        R_set_altstring_Elt_method(string, altstring::elt);
        R_set_altstring_Set_elt_method(string, altstring::set_elt);
    }
    let _ = CLASSES.set(Classes(classes));
}

fn class_of(elem: ElemType) -> Option<R_altrep_class_t> {
    let classes = CLASSES.get()?;
    class_index(elem).map(|i| classes.0[i])
}

/// The [`VecData`] of `x` when `x` is an fmalloc ALTREP vector.
///
/// # Safety
/// `x` must be a valid SEXP.
pub(crate) unsafe fn vec_data_of(x: SEXP) -> Option<*mut VecData> {
    let classes = CLASSES.get()?;
    // SAFETY: x is a valid SEXP; ALTREP/R_altrep_inherits only read its
    // header, and data_of reads data1 of one of our instances.
    unsafe {
        if ALTREP(x) == 0 || !classes.0.iter().any(|c| R_altrep_inherits(x, *c) != 0) {
            return None;
        }
        data_of(x)
    }
}

/// Where the elements of an instance are, and how many (elements of `T`).
///
/// # Safety
/// `x` must be an instance of an atomic fmalloc class with elements `T`.
#[inline]
unsafe fn storage<T>(x: SEXP) -> (*mut T, R_xlen_t) {
    // SAFETY: see `vd` and `cur`.
    unsafe {
        let d = vd(x);
        (cur(x, d) as *mut T, d.len as R_xlen_t)
    }
}

// ---------------------------------------------------------------------------
// Creating vectors
// ---------------------------------------------------------------------------

/// How a new vector gets its reference to the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockRef {
    /// The block was just allocated (`malloc` gave it one reference): the
    /// vector takes that reference over.
    Adopt,
    /// The block is shared (e.g. named): the vector retains one more.
    Retain,
}

/// A new ALTREP vector over `desc`, after checking that the element range
/// lies inside the block. On error with [`BlockRef::Adopt`] the block is
/// released, so nothing leaks.
pub(crate) fn new_altrep(heap: &Heap, desc: &BlockDesc, how: BlockRef) -> savvy::Result<SEXP> {
    let adopted = how == BlockRef::Adopt;
    let result = describe(heap, desc).and_then(|mut data| {
        if adopted {
            data.counted = desc.length.saturating_mul(desc.elem.size());
        }
        if desc.elem == ElemType::String {
            // The pool holds the block: adopts the caller's reference or
            // takes one (or is the pool other vectors already share).
            let hold = if adopted { Hold::Adopt } else { Hold::Retain };
            let pool = Pool::open(heap, desc.offset, desc.length, hold);
            let pool = match pool {
                Ok(p) => p,
                // Pool::open released an adopted block itself.
                Err(e) => return Err((e, false)),
            };
            data.len = pool.read(strpool::layout).map(|l| l.n).unwrap_or(data.len);
            data.store = Store::Pool(pool);
        } else if !adopted {
            heap.retain(desc.offset).map_err(|e| (e, false))?;
        }
        Ok(data)
    });
    let data = match result {
        Ok(d) => d,
        Err((e, owned)) => {
            if adopted && owned {
                let _ = heap.release(desc.offset);
            }
            return Err(e.into());
        }
    };
    wrap(data)
}

/// Validates `desc` against the heap (untrusted catalog) and maps it.
/// The error is paired with whether the caller still owns an adopted block.
fn describe(heap: &Heap, desc: &BlockDesc) -> Result<VecData, (Error, bool)> {
    describe_block(heap, desc).map_err(|e| (e, true))
}

fn describe_block(heap: &Heap, desc: &BlockDesc) -> Result<VecData, Error> {
    let bad = |what: String| Error::Invalid(format!("block at offset {}: {what}", desc.offset));
    let cap = heap.block_size(desc.offset)?;
    let block_end = desc
        .offset
        .checked_add(cap)
        .ok_or_else(|| bad("size overflows".into()))?;
    class_index(desc.elem).ok_or_else(|| bad("opaque bytes are not a vector".into()))?;
    let bytes = desc
        .length
        .checked_mul(desc.elem.size())
        .ok_or_else(|| bad("length overflows".into()))?;
    let in_block = desc.data_offset >= desc.offset
        && desc
            .data_offset
            .checked_add(bytes)
            .is_some_and(|end| end <= block_end);
    if !in_block {
        return Err(bad(format!(
            "{} elements at offset {} exceed the block",
            desc.length, desc.data_offset
        )));
    }
    let mapped = heap.ptr(desc.data_offset, bytes)?.as_ptr();
    let len = if desc.elem == ElemType::String {
        // SAFETY: [mapped, mapped + bytes) is mapped while `heap` lives.
        let buf = unsafe { std::slice::from_raw_parts(mapped, bytes as usize) };
        let l = strpool::layout(buf).map_err(|e| Error::Corrupt {
            path: heap.path().to_path_buf(),
            what: e.to_string(),
        })?;
        l.n
    } else {
        desc.length
    };
    if len > isize::MAX as u64 {
        return Err(bad("length exceeds R_xlen_t".into()));
    }
    Ok(VecData {
        heap: heap.clone(),
        // For strings, `new_altrep` replaces this by the shared pool.
        store: Store::Block {
            block: desc.offset,
            data_off: desc.data_offset,
            mapped,
        },
        len,
        elem: desc.elem,
        readonly: heap.is_readonly(),
        seen: 0,
        counted: 0,
        by_reference: false,
    })
}

/// Wraps `data` in a new ALTREP instance of its class (data1 owns `data`:
/// see [`new_instance`]). On an error `data` is dropped, which releases its
/// block.
fn wrap(data: VecData) -> savvy::Result<SEXP> {
    let Some(cls) = class_of(data.elem) else {
        data.release_block();
        return Err(internal("the ALTREP classes are not registered"));
    };
    new_instance(cls, data)
}

// ---------------------------------------------------------------------------
// Methods shared by all classes
// ---------------------------------------------------------------------------

/// Length of an instance.
unsafe extern "C" fn length(x: SEXP) -> R_xlen_t {
    // SAFETY: R calls this with an instance of the class the method was set
    // on.
    unsafe { vd(x).len as R_xlen_t }
}

unsafe extern "C" fn inspect(
    x: SEXP,
    _pre: c_int,
    _deep: c_int,
    _pvec: c_int,
    _subtree: InspectSubtree,
) -> Rboolean {
    let line = guard(|| {
        // SAFETY: R calls this with an instance of our class.
        let d = unsafe { vd(x) };
        let name = class_index(d.elem).map_or("?", |i| TYPES[i].class.trim_end_matches('\0'));
        let desc = d.desc();
        // SAFETY: R calls this with an instance of our class.
        let copied = unsafe { private_copy(x) }.is_some();
        Ok(std::ffi::CString::new(format!(
            "{name} (heap '{}', block {}, offset {}, length {}{}{})\n",
            d.heap.path().display(),
            desc.offset,
            desc.data_offset,
            d.len,
            if d.readonly { ", read-only" } else { "" },
            if copied { ", materialised" } else { "" },
        ))
        .unwrap_or_default())
    });
    // SAFETY: "%s" with a NUL-terminated string; Rprintf does not longjmp.
    unsafe { Rprintf(c"%s".as_ptr(), line.as_ptr()) };
    TRUE
}

/// Replaces the mapping by an ordinary R vector in data2 (see module docs).
///
/// # Safety
/// `x` must be an instance of our classes; may allocate (and so longjmp on
/// R memory errors) while no Rust value with a destructor is live.
pub(crate) unsafe fn materialise(x: SEXP, d: &mut VecData) {
    // SAFETY: x is an instance of our classes.
    if unsafe { private_copy(x) }.is_some() {
        return;
    }
    if d.pool().is_some() {
        // SAFETY: forwarded to the caller.
        unsafe { altstring::expand(x, d) };
        return;
    }
    let n = d.len as R_xlen_t;
    // SAFETY: allocation of an ordinary vector of x's type and length; the
    // copy reads `len` elements from the live mapping.
    unsafe {
        let copy = Rf_protect(Rf_allocVector(sexptype(d.elem), n));
        let bytes = (d.len * d.elem.size()) as usize;
        ptr::copy_nonoverlapping(d.mapped(), data_ptr(copy) as *mut u8, bytes);
        R_set_altrep_data2(x, copy);
        Rf_unprotect(1);
    }
}

unsafe extern "C" fn dataptr(x: SEXP, writable: Rboolean) -> *mut c_void {
    // SAFETY: R calls this with an instance of our class.
    let d = unsafe { vd(x) };
    if d.elem == ElemType::String {
        // SAFETY: see `altstring::expanded`.
        return unsafe { data_ptr(altstring::expanded(x, d)) };
    }
    if writable != 0 && d.readonly {
        // SAFETY: see `materialise`; `d` is a plain reference.
        unsafe { materialise(x, d) };
    }
    // SAFETY: x is our instance, d its data.
    unsafe { cur(x, d) as *mut c_void }
}

unsafe extern "C" fn dataptr_or_null(x: SEXP) -> *const c_void {
    // SAFETY: R calls this with an instance of our class.
    let d = unsafe { vd(x) };
    if d.elem == ElemType::String {
        // Only an expanded copy that is current (never allocates here).
        // SAFETY: x is our instance.
        return match unsafe { private_copy(x) } {
            Some(copy) if !altstring::stale(d) => unsafe { data_ptr(copy) },
            _ => ptr::null(),
        };
    }
    // SAFETY: x is our instance, d its data.
    unsafe { cur(x, d) as *const c_void }
}

unsafe extern "C" fn elt<T: Copy>(x: SEXP, i: R_xlen_t) -> T {
    // SAFETY: R calls Elt with 0 <= i < length on an instance whose
    // elements are of type T (fixed by the class the method was set on).
    // The hot path of scalar `x[i]`: no length lookup.
    unsafe { *(cur(x, vd(x)) as *const T).offset(i) }
}

/// The value an out-of-range or `NA` index selects.
trait Missing: Copy {
    fn missing() -> Self;
}
impl Missing for c_int {
    fn missing() -> Self {
        c_int::MIN // NA_INTEGER and NA_LOGICAL
    }
}
impl Missing for f64 {
    fn missing() -> Self {
        // SAFETY: reading R's NA_REAL constant.
        unsafe { R_NaReal }
    }
}
impl Missing for Rcomplex {
    fn missing() -> Self {
        let na = f64::missing();
        Rcomplex { r: na, i: na }
    }
}
impl Missing for Rbyte {
    fn missing() -> Self {
        0
    }
}

/// `x[indx]` gathered straight from the data (R's default calls Elt once
/// per element). `indx` is R's processed subscript: 1-based positions as
/// integer or double, `NA` or past the end selecting `NA`. Attributes
/// (names) are left to R, as for any ExtractSubset. Returns C `NULL` (R's
/// default then runs) for anything else.
unsafe extern "C" fn extract_subset<T: Missing>(x: SEXP, indx: SEXP, _call: SEXP) -> SEXP {
    // SAFETY: R calls this with an instance of our class whose elements are
    // T, and a subscript vector; every position is checked against the
    // length before the read. Allocation may longjmp with no Rust value
    // with a destructor live.
    unsafe {
        let (src, len) = storage::<T>(x);
        let src = src as *const T;
        let ty = TYPEOF(x) as SEXPTYPE;
        let n = XLENGTH(indx);
        let pick = |k: R_xlen_t| -> T {
            if k >= 1 && k <= len {
                *src.offset(k - 1)
            } else {
                T::missing()
            }
        };
        // Positions are read in chunks through Get_region, so an ALTREP
        // subscript (e.g. a compact 1:n) is never expanded.
        const CHUNK: R_xlen_t = 1024;
        match TYPEOF(indx) as SEXPTYPE {
            INTSXP => {
                let out = Rf_allocVector(ty, n);
                let dst = data_ptr(out) as *mut T;
                let mut buf = [0 as c_int; CHUNK as usize];
                let mut j = 0;
                while j < n {
                    let got = INTEGER_GET_REGION(indx, j, CHUNK.min(n - j), buf.as_mut_ptr());
                    for (m, &k) in buf[..got.max(0) as usize].iter().enumerate() {
                        // NA_INTEGER is negative: pick() gives NA.
                        *dst.offset(j + m as R_xlen_t) = pick(k as R_xlen_t);
                    }
                    if got <= 0 {
                        break;
                    }
                    j += got;
                }
                out
            }
            REALSXP => {
                let out = Rf_allocVector(ty, n);
                let dst = data_ptr(out) as *mut T;
                let mut buf = [0f64; CHUNK as usize];
                let mut j = 0;
                while j < n {
                    let got = REAL_GET_REGION(indx, j, CHUNK.min(n - j), buf.as_mut_ptr());
                    for (m, &k) in buf[..got.max(0) as usize].iter().enumerate() {
                        // NaN and out-of-range doubles fail the range check.
                        let k = if k.is_finite() { k as R_xlen_t } else { 0 };
                        *dst.offset(j + m as R_xlen_t) = pick(k);
                    }
                    if got <= 0 {
                        break;
                    }
                    j += got;
                }
                out
            }
            _ => ptr::null_mut(),
        }
    }
}

unsafe extern "C" fn get_region<T: Copy>(
    x: SEXP,
    i: R_xlen_t,
    n: R_xlen_t,
    buf: *mut T,
) -> R_xlen_t {
    // SAFETY: as for `elt`; R provides room for n elements in buf.
    unsafe {
        let (src, len) = storage::<T>(x);
        if i < 0 || i >= len || n <= 0 {
            return 0;
        }
        let k = n.min(len - i);
        ptr::copy_nonoverlapping((src as *const T).offset(i), buf, k as usize);
        k
    }
}

/// An ordinary vector with the same elements (attributes are copied by R).
unsafe extern "C" fn duplicate(x: SEXP, _deep: Rboolean) -> SEXP {
    // SAFETY: R calls this with an instance of our class; allocation errors
    // longjmp with no Rust value with a destructor live.
    unsafe {
        let d = vd(x);
        let n = d.len as R_xlen_t;
        let out = Rf_protect(Rf_allocVector(sexptype(d.elem), n));
        if d.elem == ElemType::String {
            for i in 0..n {
                SET_STRING_ELT(out, i, altstring::elt(x, i));
            }
        } else {
            let bytes = (d.len * d.elem.size()) as usize;
            ptr::copy_nonoverlapping(cur(x, d), data_ptr(out) as *mut u8, bytes);
        }
        Rf_unprotect(1);
        out
    }
}

/// By value (C NULL: R serializes the expanded vector) unless a reference
/// to a named block was asked for: see `r::vector::serialize`.
unsafe extern "C" fn serialized_state(x: SEXP) -> SEXP {
    // SAFETY: R calls this with an instance of our class.
    unsafe { serialize::serialized_state(x) }
}

unsafe extern "C" fn unserialize(cls: SEXP, state: SEXP) -> SEXP {
    // SAFETY: R calls this with the state `serialized_state` made.
    unsafe { serialize::unserialize(cls, state) }
}
