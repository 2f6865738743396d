# The session's default heap: init_fmalloc() opens it, cleanup_fmalloc()
# closes it, and every function with `heap = NULL` uses it.

.fmalloc_state <- new.env(parent = emptyenv())
# Depth of .fm_quietly() sections (see .rfm()).
.fmalloc_state$quiet <- 0L

#' Open the session's default heap
#'
#' `init_fmalloc()` opens the heap file `filepath` (creating and initialising
#' it when it does not exist or is empty) and makes it the session's default
#' heap: [create_fmalloc_vector()] and the `fmalloc_*` functions use it when
#' no `heap` is given. A previous default heap is closed; its vectors stay
#' valid.
#'
#' `cleanup_fmalloc()` closes the default heap. Vectors created in it stay
#' readable and writable until they are garbage collected; the file is
#' unmapped when the last of them is gone.
#'
#' @param filepath Path of the heap file.
#' @param size_gb Initial size of a new heap in GiB, or `NULL` for the
#'   default. The file is sparse: a 50 GiB heap uses no disk space until data
#'   are written, and the heap grows when it runs out of space.
#' @param verbose Print what was done. Defaults to the option
#'   `fmalloc.verbose`, which defaults to `FALSE`.
#' @param recover `TRUE` to open a heap whose newest commit is damaged at the
#'   previous commit (with a warning), as [fmalloc_open()] does; by default
#'   such a heap is refused (class `fmalloc_corrupt`), so that nothing of the
#'   newest commit is given up.
#'
#' @returns `init_fmalloc()` returns, invisibly, `TRUE` when the file was
#'   newly initialised, `FALSE` when an existing heap was opened.
#'   `cleanup_fmalloc()` returns, invisibly, `TRUE` if a default heap was
#'   closed and `FALSE` if there was none.
#' @seealso [fmalloc_open()] for heap handles.
#' @examples
#' alloc_file <- tempfile(fileext = ".bin")
#' init_fmalloc(alloc_file) # invisibly TRUE: a new heap
#' v <- create_fmalloc_vector("integer", 10)
#' v[1:3] <- 1:3
#' v
#' rm(v)
#' cleanup_fmalloc()
#' init_fmalloc(alloc_file) # the file is a heap now
#' cleanup_fmalloc()
#' unlink(alloc_file)
#' @export
init_fmalloc <- function(filepath, size_gb = NULL,
                         verbose = getOption("fmalloc.verbose", FALSE),
                         recover = FALSE) {
  if (missing(filepath)) .fm_missing_args("filepath", sys.call())
  .check_path(filepath, "filepath")
  .check_size_gb(size_gb)
  .check_flag(verbose, "verbose")
  heap <- fmalloc_open(filepath, size_gb = size_gb, verbose = verbose, recover = recover)
  old <- .fmalloc_state$heap
  .fmalloc_state$heap <- heap
  if (!is.null(old)) {
    fmalloc_close(old, verbose = FALSE)
  }
  invisible(isTRUE(attr(heap, "created")))
}

#' @rdname init_fmalloc
#' @export
cleanup_fmalloc <- function(verbose = getOption("fmalloc.verbose", FALSE)) {
  .check_flag(verbose, "verbose")
  heap <- .fmalloc_state$heap
  if (is.null(heap)) {
    return(invisible(FALSE))
  }
  .fmalloc_state$heap <- NULL
  fmalloc_close(heap, verbose = verbose)
  invisible(TRUE)
}

# The default heap, or an fmalloc_closed error raised from `call`.
.fmalloc_default_heap <- function(call = sys.call(-1L)) {
  heap <- .fmalloc_state$heap
  if (is.null(heap)) {
    .fmalloc_abort(
      "Rfmalloc: no default heap is open; call init_fmalloc(path) first or pass `heap`",
      "fmalloc_closed", call
    )
  }
  heap
}
