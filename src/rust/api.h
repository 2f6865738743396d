SEXP savvy_fmalloc_handle_register__ffi(SEXP c_arg__heap);
SEXP savvy_fmalloc_handle_valid__ffi(SEXP c_arg__ptr);
SEXP savvy_fmalloc_has_classic__ffi(void);
SEXP savvy_fmalloc_heap_check__ffi(SEXP c_arg__heap);
SEXP savvy_fmalloc_heap_recovery__ffi(SEXP c_arg__heap);
SEXP savvy_fmalloc_named_block_vector__ffi(SEXP c_arg__heap, SEXP c_arg__block, SEXP c_arg__data_offset, SEXP c_arg__elem, SEXP c_arg__length);
SEXP savvy_fmalloc_named_exists__ffi(SEXP c_arg__heap, SEXP c_arg__name);
SEXP savvy_fmalloc_named_get__ffi(SEXP c_arg__heap, SEXP c_arg__name);
SEXP savvy_fmalloc_named_list__ffi(SEXP c_arg__heap);
SEXP savvy_fmalloc_named_put_raw_meta__ffi(SEXP c_arg__heap, SEXP c_arg__name, SEXP c_arg__meta);
SEXP savvy_fmalloc_named_raw_meta__ffi(SEXP c_arg__heap, SEXP c_arg__name);
SEXP savvy_fmalloc_named_remove__ffi(SEXP c_arg__heap, SEXP c_arg__name);
SEXP savvy_fmalloc_named_rename__ffi(SEXP c_arg__heap, SEXP c_arg__from, SEXP c_arg__to, SEXP c_arg__overwrite);
SEXP savvy_fmalloc_named_save__ffi(SEXP c_arg__heap, SEXP c_arg__name, SEXP c_arg__desc, SEXP c_arg__leaves, SEXP c_arg__overwrite);
SEXP savvy_fmalloc_path_check__ffi(SEXP c_arg__path);
SEXP savvy_fmalloc_ref_leaf__ffi(SEXP c_arg__x);
SEXP savvy_fmalloc_vector_create__ffi(SEXP c_arg__heap, SEXP c_arg__elem, SEXP c_arg__length, SEXP c_arg__method, SEXP c_arg__init);
SEXP savvy_fmalloc_vector_inspect__ffi(SEXP c_arg__x);
SEXP savvy_fmalloc_vector_is__ffi(SEXP c_arg__x);
SEXP savvy_init_rfmalloc__ffi(DllInfo* c_arg__dll_info);

// methods and associated functions for FmallocHeap
SEXP savvy_FmallocHeap_close__ffi(SEXP self__);
SEXP savvy_FmallocHeap_created__ffi(SEXP self__);
SEXP savvy_FmallocHeap_info__ffi(SEXP self__);
SEXP savvy_FmallocHeap_is_closed__ffi(SEXP self__);
SEXP savvy_FmallocHeap_open__ffi(SEXP c_arg__path, SEXP c_arg__readonly, SEXP c_arg__size_bytes);
SEXP savvy_FmallocHeap_path__ffi(SEXP self__);
SEXP savvy_FmallocHeap_sync__ffi(SEXP self__);
