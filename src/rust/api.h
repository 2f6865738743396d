SEXP savvy_init_rfmalloc__ffi(DllInfo* c_arg___dll_info);

// methods and associated functions for FmallocHeap
SEXP savvy_FmallocHeap_close__ffi(SEXP self__);
SEXP savvy_FmallocHeap_created__ffi(SEXP self__);
SEXP savvy_FmallocHeap_info__ffi(SEXP self__);
SEXP savvy_FmallocHeap_is_closed__ffi(SEXP self__);
SEXP savvy_FmallocHeap_open__ffi(SEXP c_arg__path, SEXP c_arg__readonly, SEXP c_arg__size_bytes);
SEXP savvy_FmallocHeap_path__ffi(SEXP self__);
SEXP savvy_FmallocHeap_sync__ffi(SEXP self__);
