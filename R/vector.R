#' Create a vector in a heap
#'
#' `create_fmalloc_vector()` returns a new vector whose data live in a heap
#' file. It is an ordinary R vector to every R function: no extra class or
#' attribute, `identical()` to the same values in an ordinary vector. When R
#' modifies it in place (`x[i] <- v` with one reference to `x`), the write
#' lands in the file; when `x` is shared, R copies it first, as always, and
#' the copy is an ordinary vector. The heap space is returned when the vector
#' is garbage collected.
#'
#' Two allocation methods:
#'
#' * `"altrep"` (default): an ALTREP vector over a heap block. Its data can
#'   be given a name and found again in a later session.
#' * `"classic"`: R allocates the whole vector, header included, in the heap
#'   through a custom allocator (`Rf_allocVector3()`). Such vectors are
#'   session-scoped (R's header holds process addresses). R does not use
#'   custom allocators for length 0, nor for length 1 logical, integer and
#'   double vectors: those are created with the `"altrep"` method. Character
#'   vectors made this way hold pointers to R's own string cache, so their
#'   contents are meaningful in this session only.
#'
#' @section The classic path and R's API:
#' `Rf_allocVector3()` is the only way for a package to choose where R puts
#' a whole vector, and it is not part of R's API: "Writing R Extensions"
#' does not list it, and `R CMD check` on R >= 4.5 reports it as a non-API
#' call. It is Rfmalloc's only non-API call. The `"classic"` method needs
#' it; `"altrep"` vectors use it too, for a small node in process memory
#' (never in the file) whose collection by R releases the vector's heap
#' block, which costs less than a finalizer per vector. Installing with the
#' environment variable `RFMALLOC_CLASSIC=false` (e.g.
#' `Sys.setenv(RFMALLOC_CLASSIC = "false")` before `install.packages()`, or
#' `RFMALLOC_CLASSIC=false R CMD INSTALL ...`) builds the package without
#' it: `method = "classic"` then gives an error of class
#' `fmalloc_unsupported`, ALTREP vectors release their block through a
#' finalizer (making and collecting many small vectors costs more),
#' everything else works the same, and [fmalloc_has_classic()] returns
#' `FALSE`.
#'
#' Character vectors (`"altrep"`) keep their strings in a string pool in the
#' heap; element reads and writes preserve `NA` and the encoding (UTF-8,
#' latin1, bytes, native). R assigns strings one element at a time, so
#' when the pool cannot grow (a full disk) `x[i] <- value` stops with an
#' error of class `fmalloc_full` at the first string that finds no room,
#' the elements before it written; [fmalloc_write()] of strings writes all
#' of them or none. Reading an element makes R's string for it from the
#' pool (a lookup in R's global string cache), every time: nothing is kept
#' in R's memory, which is what lets a character vector larger than memory
#' be read. So whole-vector operations cost more than on an ordinary
#' vector, on every call (measured with 1e6 strings: `x == "a"` and
#' `unique(x)` 15-50 times, `nchar(x)` 3 times). For repeated work on a
#' character vector that fits in memory, take an ordinary copy once,
#' `y <- x[]` (or `fmalloc_get(name, copy = TRUE)`), which costs about one
#' such pass.
#'
#' R's garbage collector does not see heap memory, so after every GiB
#' allocated in heaps Rfmalloc runs it (`gc()`): vectors no longer referenced
#' then return their space and the file stays bounded. A full heap that
#' cannot grow gives an error of class `fmalloc_full` after one more
#' collection.
#'
#' @param type One of `"logical"`, `"integer"`, `"numeric"` (or `"double"`),
#'   `"complex"`, `"raw"`, `"character"`.
#' @param length Number of elements (may exceed `2^31 - 1`).
#' @param heap A heap handle from [fmalloc_open()], or `NULL` for the
#'   session's default heap (see [init_fmalloc()]).
#' @param method `"altrep"` or `"classic"`, see Details.
#' @param init Fill with zeros (`FALSE`, `0`, `0+0i`, `00`; `NA` for
#'   character). With `init = FALSE` the contents are unspecified (the space
#'   may be reused); character vectors are always `NA`-filled and logical
#'   vectors `FALSE`-filled (other bytes would not be valid logicals). Zeros
#'   cost no writing where the vector gets file space no vector used before
#'   (a new heap, its growth, the unused end of a reopened heap file: it
#'   reads as zeros and is not written, so creating even a vector larger than
#'   memory takes a fraction of a second; its disk space is reserved, not
#'   written, so it counts in the file's disk use from the start); space
#'   recycled from collected vectors is zeroed when it is reused.
#' @param name If not `NULL`, the vector is also saved under this name in
#'   the heap, without a copy: `create_fmalloc_vector(type, n, name = "v")`
#'   is `fmalloc_save(create_fmalloc_vector(type, n), "v")` (see
#'   [fmalloc_save()]; an existing name is an error). Like `fmalloc_save()`,
#'   it returns the object as `fmalloc_get("v")` does: an ALTREP vector over
#'   the new data, whatever the `method`; a classic vector made for it is
#'   dropped (and lingers until R's next garbage collection, which matters
#'   for forked workers: see the vignette's section on them).
#'
#' @returns A vector of the given type and length.
#' @seealso [is_fmalloc()]
#' @examples
#' alloc_file <- tempfile(fileext = ".bin")
#' init_fmalloc(alloc_file)
#' v_int <- create_fmalloc_vector("integer", 10)
#' v_num <- create_fmalloc_vector("numeric", 10,
#'   method = if (fmalloc_has_classic()) "classic" else "altrep")
#' v_int[1:3] <- c(1L, 2L, 3L)
#' v_num[1:3] <- c(1.1, 2.2, 3.3)
#' v_int[1:3]
#' sum(v_num)
#' s <- create_fmalloc_vector("character", 3)
#' s[2] <- "\u00e9"
#' s
#' is_fmalloc(v_int)
#' is_fmalloc(v_int + 1L) # arithmetic gives an ordinary vector
#' rm(v_int, v_num, s)
#' invisible(gc())
#' cleanup_fmalloc()
#' unlink(alloc_file)
#' @export
create_fmalloc_vector <- function(type, length, heap = NULL,
                                  method = c("altrep", "classic"), init = TRUE,
                                  name = NULL) {
  if (missing(type) || missing(length)) .fm_missing_args(c("type", "length"), sys.call())
  if (!is.null(name)) {
    return(.fmalloc_create_named(type, length, heap, method, init, name, sys.call()))
  }
  # Kept thin: creating many small vectors must cost about what double(k)
  # does. The arguments are checked in Rust, which returns an error as the
  # returned form of the error mechanism (a tagged message of class
  # "fmalloc_failure", see R/error.R and fmalloc_vector_create() in
  # src/rust/src/r/vector.rs) instead of raising it; a new vector has no
  # class, and is.object() is inlined by the byte compiler (is.list() is a
  # call).
  if (.promise_lookup && .ptr_unforced(heap)) {
    .check_heap(heap, call = sys.call()) # fmalloc_invalid, the promise not run
  }
  x <- .Call(savvy_fmalloc_vector_create__impl,
             if (is.null(heap)) .fmalloc_state$heap else heap,
             type, length, if (missing(method)) NULL else method, init)
  if (is.object(x)) {
    if (is.null(heap) && is.null(.fmalloc_state$heap)) {
      .fmalloc_default_heap(sys.call()) # says how to get one
    }
    .fmalloc_raise(unclass(x), sys.call())
  }
  x
}


#' Is a vector's data in a heap?
#'
#' `is_fmalloc(x)` is `TRUE` when the data of `x` live in a heap file: a
#' vector made by [create_fmalloc_vector()] (either method) or got from a
#' heap, whose elements R reads from the file and (on a heap opened for
#' writing) writes into it. It is `FALSE` for ordinary vectors, including
#' every copy R makes of a heap vector: the result of copy-on-modify
#' (`y <- x; y[1] <- 0` makes `y` an ordinary vector), of a coercion
#' (`x[1] <- 1.5` on an integer vector), of arithmetic, and a vector of a
#' read-only heap that R modified, or asked for writable memory (some of
#' R's functions do that even to read, e.g. `identical()`, `range()`,
#' `sort()`, `cumsum()`): its data became a private copy in memory, and it
#' stays `FALSE` for it. So a `TRUE` says that the data of `x` are read
#' from the file and, on a heap opened for writing, that in-place writes to
#' `x` reach it. A vector of length zero has no data: a named object of
#' length zero is stored without a block, and `fmalloc_get()` (or
#' `create_fmalloc_vector(name = )`) returns an ordinary empty vector for it,
#' for which `is_fmalloc()` is `FALSE`.
#'
#' @param x Any R object.
#' @returns `TRUE` or `FALSE`.
#' @examples
#' alloc_file <- tempfile(fileext = ".bin")
#' init_fmalloc(alloc_file)
#' x <- create_fmalloc_vector("double", 5)
#' is_fmalloc(x)
#' is_fmalloc(c(x, 1))
#' rm(x)
#' cleanup_fmalloc()
#' unlink(alloc_file)
#' @export
is_fmalloc <- function(x) {
  if (missing(x)) .fm_missing_args("x", sys.call())
  .Call(savvy_fmalloc_vector_is__impl, x)
}

# For tests and debugging: where an fmalloc vector's data live, as a list
# (method, path, block, offset, length, type, private, readonly), or NULL.
# `offset` is the file offset of element 0 (of the string pool for
# character vectors); `length` is elements (pool bytes for character).
.fmalloc_inspect <- function(x) {
  .Call(savvy_fmalloc_vector_inspect__impl, x)
}

#' Does this build have the classic path?
#'
#' `FALSE` when Rfmalloc was installed with `RFMALLOC_CLASSIC=false`, which
#' leaves out `create_fmalloc_vector(method = "classic")` and with it the
#' package's only call into R that is not part of R's API
#' (`Rf_allocVector3()`, which ALTREP vectors also use when it is there;
#' see [create_fmalloc_vector()]).
#'
#' @returns `TRUE` or `FALSE`.
#' @examples
#' fmalloc_has_classic()
#' @export
fmalloc_has_classic <- function() {
  .Call(savvy_fmalloc_has_classic__impl)
}
