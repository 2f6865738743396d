#' Open, inspect and close a heap file
#'
#' A heap file holds R vectors in memory-mapped storage. `fmalloc_open()`
#' opens the file at `path`, creating and initialising it when it does not
#' exist or is empty. A file that exists but is not an Rfmalloc heap is
#' refused with an error of class `fmalloc_corrupt` and left unchanged.
#'
#' One process may open a heap for writing; others then get an error of class
#' `fmalloc_locked`. Any number of processes may open it with
#' `readonly = TRUE` while no one writes.
#'
#' If the newest commit recorded in the file cannot be read (a crash tore
#' it, or the file was damaged), the heap opens at the previous commit with
#' a warning of class `fmalloc_recovered` that says which objects the lost
#' commit had saved, changed or removed; a writable heap's next commit
#' replaces the damaged record. Nothing is recovered silently.
#'
#' `fmalloc_close()` releases the handle. Vectors still pointing into the heap
#' stay valid: the file is unmapped when the last of them is garbage
#' collected. Closing twice is harmless; any other use of a closed handle
#' gives an error of class `fmalloc_closed`.
#'
#' @param path Path of the heap file.
#' @param size_gb Initial size of a new heap in GiB (2^30 bytes), or `NULL`
#'   for the default. The file is sparse: disk space is used only as data are
#'   written, and the heap grows when it runs out of space. Ignored when the
#'   file is already a heap.
#' @param readonly Open for reading only. Vectors from a read-only heap are
#'   read-only: R copies them before any modification.
#' @param sync When commits (saves, removals, renames) reach the disk:
#'   `"commit"` (the default) flushes at every commit, so a commit that
#'   returned survives a crash of R and a power loss; `"none"` flushes only
#'   at [fmalloc_sync()], at close and when the space held back for crash
#'   safety grows large: a commit that returned survives a crash of R (the
#'   operating system writes it), and after a power loss the heap opens at
#'   the last synced commit or a later one, never torn. Ignored for
#'   `readonly = TRUE`. See [fmalloc_batch()] to group changes into one
#'   commit.
#' @param verbose Print what was done. Defaults to the option
#'   `fmalloc.verbose`, which defaults to `FALSE`.
#' @param heap A heap handle returned by `fmalloc_open()`. For
#'   `fmalloc_info()` and `fmalloc_sync()`, `NULL` (the default) stands for
#'   the session's default heap (see [init_fmalloc()]).
#'
#' @returns `fmalloc_open()` returns a heap handle of class `fmalloc_heap`;
#'   its attribute `"created"` is `TRUE` when the file was newly initialised.
#'   `fmalloc_close()` and `fmalloc_sync()` return `NULL` invisibly;
#'   `fmalloc_sync()` returns once everything written so far is on disk.
#'   `fmalloc_info()` returns a one-row data frame with columns `path`,
#'   `heap_id` (the heap's random identity, hex), `readonly`, `size` (bytes of
#'   the heap file), `used` and `free` (bytes inside it) and `objects` (the
#'   number of named objects).
#'
#' @seealso [Rfmalloc-package] for the error classes.
#' @examples
#' path <- tempfile(fileext = ".bin")
#' heap <- fmalloc_open(path, size_gb = 1)
#' heap
#' attr(heap, "created")
#' fmalloc_info(heap)
#' fmalloc_close(heap)
#'
#' # The file is now a heap; reopening finds it as it was left.
#' heap <- fmalloc_open(path, readonly = TRUE)
#' attr(heap, "created")
#' fmalloc_close(heap)
#'
#' # Errors have classes that tryCatch() can select.
#' not_a_heap <- tempfile()
#' writeLines("hello", not_a_heap)
#' tryCatch(fmalloc_open(not_a_heap), fmalloc_corrupt = conditionMessage)
#' unlink(c(path, not_a_heap))
#' @name fmalloc_open
NULL

#' @rdname fmalloc_open
#' @export
fmalloc_open <- function(path, size_gb = NULL, readonly = FALSE,
                         verbose = getOption("fmalloc.verbose", FALSE),
                         sync = c("commit", "none")) {
  .check_string(path, "path")
  .check_size_gb(size_gb)
  .check_flag(readonly, "readonly")
  .check_flag(verbose, "verbose")
  sync <- .fm_sync_arg(sync, sys.call())

  size_bytes <- if (is.null(size_gb)) NULL else size_gb * 1024^3
  heap <- .rfm(FmallocHeap$open(.absolute_path(path), readonly, size_bytes))
  .Call(savvy_fmalloc_handle_register__impl, heap$.ptr)
  class(heap) <- c("fmalloc_heap", class(heap))
  attr(heap, "created") <- heap$created()
  if (!readonly) .rfm(fmalloc_heap_set_sync(heap, sync))
  why <- fmalloc_heap_recovery(heap)
  if (!is.null(why)) {
    warning(structure(
      class = c("fmalloc_recovered", "fmalloc_warning", "warning", "condition"),
      list(message = sprintf("Rfmalloc: heap '%s': %s", heap$path(), why), call = sys.call())
    ))
  }
  if (verbose) {
    info <- .rfm(heap$info())
    message(sprintf(
      "Rfmalloc: %s heap '%s' (%s, %s used)%s",
      if (attr(heap, "created")) "created" else "opened", info$path,
      .format_bytes(info$size), .format_bytes(info$used),
      if (readonly) ", read-only" else ""
    ))
  }
  heap
}

#' @rdname fmalloc_open
#' @export
fmalloc_close <- function(heap, verbose = getOption("fmalloc.verbose", FALSE)) {
  .check_heap(heap)
  .check_flag(verbose, "verbose")
  was_open <- !heap$is_closed()
  .rfm(heap$close())
  if (verbose && was_open) {
    message(sprintf("Rfmalloc: closed heap '%s'", heap$path()))
  }
  invisible(NULL)
}

#' @rdname fmalloc_open
#' @export
fmalloc_info <- function(heap = NULL) {
  heap <- .heap_or_default(heap)
  info <- .rfm(heap$info())
  as.data.frame(info, stringsAsFactors = FALSE)
}

#' @rdname fmalloc_open
#' @export
fmalloc_sync <- function(heap = NULL) {
  heap <- .heap_or_default(heap)
  .rfm(heap$sync())
  invisible(NULL)
}

#' @export
format.fmalloc_heap <- function(x, ...) {
  if (x$is_closed()) {
    return(sprintf("<fmalloc_heap> %s (closed)", x$path()))
  }
  info <- .rfm(x$info())
  c(
    sprintf("<fmalloc_heap> %s", info$path),
    sprintf("  mode:    %s", if (info$readonly) "read-only" else "read-write"),
    sprintf("  size:    %s", .format_bytes(info$size)),
    sprintf("  used:    %s", .format_bytes(info$used)),
    sprintf("  free:    %s", .format_bytes(info$free)),
    sprintf("  objects: %s", format(info$objects, scientific = FALSE))
  )
}

#' @export
print.fmalloc_heap <- function(x, ...) {
  cat(format(x, ...), sep = "\n")
  invisible(x)
}

# `heap`, or the session's default heap when it is NULL; errors are raised
# from `call`.
.heap_or_default <- function(heap, call = sys.call(-1L)) {
  if (is.null(heap)) {
    return(.fmalloc_default_heap(call))
  }
  .check_heap(heap, call = call)
  heap
}

# `path` made absolute (and ~ expanded) without requiring it to exist, so that
# the heap remembers where it is whatever the working directory becomes.
.absolute_path <- function(path) {
  path <- path.expand(path)
  file.path(normalizePath(dirname(path), mustWork = FALSE), basename(path))
}

.format_bytes <- function(x) {
  units <- c("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
  k <- 0
  # Next unit up from 1000 on: "1.0 GiB", not "1023.9 MiB".
  while (x / 1024^k >= 1000 && k < length(units) - 1) k <- k + 1
  if (k == 0) {
    return(sprintf("%.0f B", x))
  }
  sprintf("%.1f %s", x / 1024^k, units[[k + 1]])
}
