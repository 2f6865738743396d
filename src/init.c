
// clang-format sorts includes unless SortIncludes: Never. However, the ordering
// does matter here. So, we need to disable clang-format for safety.

// clang-format off
#include <stdint.h>
#include <Rinternals.h>
#include <R_ext/Parse.h>
// clang-format on

#include "rust/api.h"

static uintptr_t TAGGED_POINTER_MASK = (uintptr_t)1;

SEXP handle_result(SEXP res_) {
    uintptr_t res = (uintptr_t)res_;

    // An error is indicated by tag.
    if ((res & TAGGED_POINTER_MASK) == 1) {
        // Remove tag
        SEXP res_aligned = (SEXP)(res & ~TAGGED_POINTER_MASK);

        // Currently, there are two types of error cases:
        //
        //   1. Error from Rust code
        //   2. Error from R's C API, which is caught by R_UnwindProtect()
        //
        if (TYPEOF(res_aligned) == CHARSXP) {
            // In case 1, the result is an error message that can be passed to
            // Rf_errorcall() directly.
            Rf_errorcall(R_NilValue, "%s", CHAR(res_aligned));
        } else {
            // In case 2, the result is the token to restart the
            // cleanup process on R's side.
            R_ContinueUnwind(res_aligned);
        }
    }

    return (SEXP)res;
}

SEXP savvy_fmalloc_batch_abort__impl(SEXP c_arg__batch) {
    SEXP res = savvy_fmalloc_batch_abort__ffi(c_arg__batch);
    return handle_result(res);
}

SEXP savvy_fmalloc_batch_begin__impl(SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_batch_begin__ffi(c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_batch_commit__impl(SEXP c_arg__batch, SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_batch_commit__ffi(c_arg__batch, c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_handle_live__impl(SEXP c_arg__x) {
    SEXP res = savvy_fmalloc_handle_live__ffi(c_arg__x);
    return handle_result(res);
}

SEXP savvy_fmalloc_has_classic__impl(void) {
    SEXP res = savvy_fmalloc_has_classic__ffi();
    return handle_result(res);
}

SEXP savvy_fmalloc_heap_check__impl(SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_heap_check__ffi(c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_heap_close__impl(SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_heap_close__ffi(c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_heap_created__impl(SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_heap_created__ffi(c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_heap_id__impl(SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_heap_id__ffi(c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_heap_info__impl(SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_heap_info__ffi(c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_heap_is_closed__impl(SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_heap_is_closed__ffi(c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_heap_open__impl(SEXP c_arg__path, SEXP c_arg__readonly, SEXP c_arg__recover, SEXP c_arg__size_bytes, SEXP c_arg__sync) {
    SEXP res = savvy_fmalloc_heap_open__ffi(c_arg__path, c_arg__readonly, c_arg__recover, c_arg__size_bytes, c_arg__sync);
    return handle_result(res);
}

SEXP savvy_fmalloc_heap_path__impl(SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_heap_path__ffi(c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_heap_recovery__impl(SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_heap_recovery__ffi(c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_heap_release__impl(SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_heap_release__ffi(c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_heap_sync__impl(SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_heap_sync__ffi(c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_named_block_vector__impl(SEXP c_arg__heap, SEXP c_arg__block, SEXP c_arg__data_offset, SEXP c_arg__elem, SEXP c_arg__length, SEXP c_arg__name) {
    SEXP res = savvy_fmalloc_named_block_vector__ffi(c_arg__heap, c_arg__block, c_arg__data_offset, c_arg__elem, c_arg__length, c_arg__name);
    return handle_result(res);
}

SEXP savvy_fmalloc_named_exists__impl(SEXP c_arg__heap, SEXP c_arg__name) {
    SEXP res = savvy_fmalloc_named_exists__ffi(c_arg__heap, c_arg__name);
    return handle_result(res);
}

SEXP savvy_fmalloc_named_get__impl(SEXP c_arg__heap, SEXP c_arg__name) {
    SEXP res = savvy_fmalloc_named_get__ffi(c_arg__heap, c_arg__name);
    return handle_result(res);
}

SEXP savvy_fmalloc_named_list__impl(SEXP c_arg__heap) {
    SEXP res = savvy_fmalloc_named_list__ffi(c_arg__heap);
    return handle_result(res);
}

SEXP savvy_fmalloc_named_put_raw_meta__impl(SEXP c_arg__heap, SEXP c_arg__name, SEXP c_arg__meta) {
    SEXP res = savvy_fmalloc_named_put_raw_meta__ffi(c_arg__heap, c_arg__name, c_arg__meta);
    return handle_result(res);
}

SEXP savvy_fmalloc_named_raw_meta__impl(SEXP c_arg__heap, SEXP c_arg__name) {
    SEXP res = savvy_fmalloc_named_raw_meta__ffi(c_arg__heap, c_arg__name);
    return handle_result(res);
}

SEXP savvy_fmalloc_named_remove__impl(SEXP c_arg__heap, SEXP c_arg__name) {
    SEXP res = savvy_fmalloc_named_remove__ffi(c_arg__heap, c_arg__name);
    return handle_result(res);
}

SEXP savvy_fmalloc_named_rename__impl(SEXP c_arg__heap, SEXP c_arg__from, SEXP c_arg__to, SEXP c_arg__overwrite) {
    SEXP res = savvy_fmalloc_named_rename__ffi(c_arg__heap, c_arg__from, c_arg__to, c_arg__overwrite);
    return handle_result(res);
}

SEXP savvy_fmalloc_named_save__impl(SEXP c_arg__heap, SEXP c_arg__name, SEXP c_arg__desc, SEXP c_arg__leaves, SEXP c_arg__overwrite) {
    SEXP res = savvy_fmalloc_named_save__ffi(c_arg__heap, c_arg__name, c_arg__desc, c_arg__leaves, c_arg__overwrite);
    return handle_result(res);
}

SEXP savvy_fmalloc_named_store__impl(SEXP c_arg__heap, SEXP c_arg__name, SEXP c_arg__desc, SEXP c_arg__leaves, SEXP c_arg__overwrite, SEXP c_arg__progress, SEXP c_arg__after_secs, SEXP c_arg__chunk_bytes) {
    SEXP res = savvy_fmalloc_named_store__ffi(c_arg__heap, c_arg__name, c_arg__desc, c_arg__leaves, c_arg__overwrite, c_arg__progress, c_arg__after_secs, c_arg__chunk_bytes);
    return handle_result(res);
}

SEXP savvy_fmalloc_path_check__impl(SEXP c_arg__path) {
    SEXP res = savvy_fmalloc_path_check__ffi(c_arg__path);
    return handle_result(res);
}

SEXP savvy_fmalloc_path_holders__impl(SEXP c_arg__path) {
    SEXP res = savvy_fmalloc_path_holders__ffi(c_arg__path);
    return handle_result(res);
}

SEXP savvy_fmalloc_path_open_writable__impl(SEXP c_arg__path) {
    SEXP res = savvy_fmalloc_path_open_writable__ffi(c_arg__path);
    return handle_result(res);
}

SEXP savvy_fmalloc_ref_leaf__impl(SEXP c_arg__x) {
    SEXP res = savvy_fmalloc_ref_leaf__ffi(c_arg__x);
    return handle_result(res);
}

SEXP savvy_fmalloc_vector_create__impl(SEXP c_arg__heap, SEXP c_arg__elem, SEXP c_arg__length, SEXP c_arg__method, SEXP c_arg__init) {
    SEXP res = savvy_fmalloc_vector_create__ffi(c_arg__heap, c_arg__elem, c_arg__length, c_arg__method, c_arg__init);
    return handle_result(res);
}

SEXP savvy_fmalloc_vector_inspect__impl(SEXP c_arg__x) {
    SEXP res = savvy_fmalloc_vector_inspect__ffi(c_arg__x);
    return handle_result(res);
}

SEXP savvy_fmalloc_vector_is__impl(SEXP c_arg__x) {
    SEXP res = savvy_fmalloc_vector_is__ffi(c_arg__x);
    return handle_result(res);
}

SEXP savvy_fmalloc_write_at__impl(SEXP c_arg__x, SEXP c_arg__index, SEXP c_arg__value) {
    SEXP res = savvy_fmalloc_write_at__ffi(c_arg__x, c_arg__index, c_arg__value);
    return handle_result(res);
}

SEXP savvy_fmalloc_write_copy__impl(SEXP c_arg__x) {
    SEXP res = savvy_fmalloc_write_copy__ffi(c_arg__x);
    return handle_result(res);
}

SEXP savvy_fmalloc_write_run__impl(SEXP c_arg__x, SEXP c_arg__first, SEXP c_arg__count, SEXP c_arg__value) {
    SEXP res = savvy_fmalloc_write_run__ffi(c_arg__x, c_arg__first, c_arg__count, c_arg__value);
    return handle_result(res);
}

SEXP savvy_fmalloc_write_scan__impl(SEXP c_arg__index, SEXP c_arg__len) {
    SEXP res = savvy_fmalloc_write_scan__ffi(c_arg__index, c_arg__len);
    return handle_result(res);
}

SEXP savvy_fmalloc_write_view__impl(SEXP c_arg__x) {
    SEXP res = savvy_fmalloc_write_view__ffi(c_arg__x);
    return handle_result(res);
}

SEXP savvy_init_rfmalloc__impl(DllInfo* c_arg__dll_info) {
    SEXP res = savvy_init_rfmalloc__ffi(c_arg__dll_info);
    return handle_result(res);
}




static const R_CallMethodDef CallEntries[] = {
    {"savvy_fmalloc_batch_abort__impl", (DL_FUNC) &savvy_fmalloc_batch_abort__impl, 1},
    {"savvy_fmalloc_batch_begin__impl", (DL_FUNC) &savvy_fmalloc_batch_begin__impl, 1},
    {"savvy_fmalloc_batch_commit__impl", (DL_FUNC) &savvy_fmalloc_batch_commit__impl, 2},
    {"savvy_fmalloc_handle_live__impl", (DL_FUNC) &savvy_fmalloc_handle_live__impl, 1},
    {"savvy_fmalloc_has_classic__impl", (DL_FUNC) &savvy_fmalloc_has_classic__impl, 0},
    {"savvy_fmalloc_heap_check__impl", (DL_FUNC) &savvy_fmalloc_heap_check__impl, 1},
    {"savvy_fmalloc_heap_close__impl", (DL_FUNC) &savvy_fmalloc_heap_close__impl, 1},
    {"savvy_fmalloc_heap_created__impl", (DL_FUNC) &savvy_fmalloc_heap_created__impl, 1},
    {"savvy_fmalloc_heap_id__impl", (DL_FUNC) &savvy_fmalloc_heap_id__impl, 1},
    {"savvy_fmalloc_heap_info__impl", (DL_FUNC) &savvy_fmalloc_heap_info__impl, 1},
    {"savvy_fmalloc_heap_is_closed__impl", (DL_FUNC) &savvy_fmalloc_heap_is_closed__impl, 1},
    {"savvy_fmalloc_heap_open__impl", (DL_FUNC) &savvy_fmalloc_heap_open__impl, 5},
    {"savvy_fmalloc_heap_path__impl", (DL_FUNC) &savvy_fmalloc_heap_path__impl, 1},
    {"savvy_fmalloc_heap_recovery__impl", (DL_FUNC) &savvy_fmalloc_heap_recovery__impl, 1},
    {"savvy_fmalloc_heap_release__impl", (DL_FUNC) &savvy_fmalloc_heap_release__impl, 1},
    {"savvy_fmalloc_heap_sync__impl", (DL_FUNC) &savvy_fmalloc_heap_sync__impl, 1},
    {"savvy_fmalloc_named_block_vector__impl", (DL_FUNC) &savvy_fmalloc_named_block_vector__impl, 6},
    {"savvy_fmalloc_named_exists__impl", (DL_FUNC) &savvy_fmalloc_named_exists__impl, 2},
    {"savvy_fmalloc_named_get__impl", (DL_FUNC) &savvy_fmalloc_named_get__impl, 2},
    {"savvy_fmalloc_named_list__impl", (DL_FUNC) &savvy_fmalloc_named_list__impl, 1},
    {"savvy_fmalloc_named_put_raw_meta__impl", (DL_FUNC) &savvy_fmalloc_named_put_raw_meta__impl, 3},
    {"savvy_fmalloc_named_raw_meta__impl", (DL_FUNC) &savvy_fmalloc_named_raw_meta__impl, 2},
    {"savvy_fmalloc_named_remove__impl", (DL_FUNC) &savvy_fmalloc_named_remove__impl, 2},
    {"savvy_fmalloc_named_rename__impl", (DL_FUNC) &savvy_fmalloc_named_rename__impl, 4},
    {"savvy_fmalloc_named_save__impl", (DL_FUNC) &savvy_fmalloc_named_save__impl, 5},
    {"savvy_fmalloc_named_store__impl", (DL_FUNC) &savvy_fmalloc_named_store__impl, 8},
    {"savvy_fmalloc_path_check__impl", (DL_FUNC) &savvy_fmalloc_path_check__impl, 1},
    {"savvy_fmalloc_path_holders__impl", (DL_FUNC) &savvy_fmalloc_path_holders__impl, 1},
    {"savvy_fmalloc_path_open_writable__impl", (DL_FUNC) &savvy_fmalloc_path_open_writable__impl, 1},
    {"savvy_fmalloc_ref_leaf__impl", (DL_FUNC) &savvy_fmalloc_ref_leaf__impl, 1},
    {"savvy_fmalloc_vector_create__impl", (DL_FUNC) &savvy_fmalloc_vector_create__impl, 5},
    {"savvy_fmalloc_vector_inspect__impl", (DL_FUNC) &savvy_fmalloc_vector_inspect__impl, 1},
    {"savvy_fmalloc_vector_is__impl", (DL_FUNC) &savvy_fmalloc_vector_is__impl, 1},
    {"savvy_fmalloc_write_at__impl", (DL_FUNC) &savvy_fmalloc_write_at__impl, 3},
    {"savvy_fmalloc_write_copy__impl", (DL_FUNC) &savvy_fmalloc_write_copy__impl, 1},
    {"savvy_fmalloc_write_run__impl", (DL_FUNC) &savvy_fmalloc_write_run__impl, 4},
    {"savvy_fmalloc_write_scan__impl", (DL_FUNC) &savvy_fmalloc_write_scan__impl, 2},
    {"savvy_fmalloc_write_view__impl", (DL_FUNC) &savvy_fmalloc_write_view__impl, 1},


    {NULL, NULL, 0}
};

void R_init_Rfmalloc(DllInfo *dll) {
    R_registerRoutines(dll, NULL, CallEntries, NULL, NULL);
    R_useDynamicSymbols(dll, FALSE);

    // Functions for initialization, if any.
    savvy_init_rfmalloc__impl(dll);
}
