#' Send named vectors to other processes by reference
#'
#' Vectors from a heap serialize *by value* by default: [saveRDS()],
#' [serialize()] and the `parallel` package write their elements, so the
#' result can be read anywhere, without Rfmalloc. For processes on the same
#' machine that can open the heap file, a named vector can instead be sent
#' *by reference*: only the heap file's path, its id and where the vector
#' lies in it are written, and the receiving process maps the same file
#' (read-only if it can) instead of receiving a copy.
#'
#' `fmalloc_ref(x)` marks the vectors of `x` (an object returned by
#' [fmalloc_get()] or [fmalloc_save()]; lists and data frames are marked
#' vector by vector) to serialize by reference; it copies no data. Setting
#' `options(fmalloc.serialize = "reference")` does the same for every
#' vector of a named object that is serialized while the option is set.
#' Vectors that are not part of a named object always serialize by value.
#'
#' Unserializing a reference opens the heap: read-only when no process has it
#' open for writing, otherwise (in the process that has it open for writing)
#' the open heap. So `parallel` workers can reconnect when the main process
#' opened the heap with `readonly = TRUE`. A process that unserialized a
#' reference keeps the heap open (read-only) while it holds the vector, so
#' the heap can be opened for writing again only once such workers dropped
#' their vectors or ended (e.g. [parallel::stopCluster()]).
#'
#' A reference is good for one serialization: a vector that arrived by
#' reference serializes *by value* again, unless it is marked again
#' (`fmalloc_ref()`, or the option). So a worker's [saveRDS()] of it
#' archives the data, and a worker that returns it sends its values back:
#' the main process does not end up holding the heap open read-only. If a
#' worker does send a reference back, the main process maps the heap
#' read-only while it holds that vector: opening the heap for writing there
#' is an error of class `fmalloc_locked` until the vector is removed and
#' garbage collected (`rm(v); gc()`).
#'
#' A vector of a read-only heap that was modified (R made it a private copy
#' in memory) can no longer be sent by reference: get it again with
#' [fmalloc_get()]. A reference to a heap file that no
#' longer exists gives an error of class `fmalloc_not_found`; to a file that
#' is now a different heap, or to an object that was removed, an error of
#' class `fmalloc_mismatch` or `fmalloc_not_found`; to a heap another process
#' has open for writing, `fmalloc_locked`. A reference names its object: it
#' is refused once that object no longer holds the data (removed, or saved
#' again elsewhere in the file), even when another object took the space;
#' an object saved again under the same name into the same space, with the
#' same type and length, is what it reconnects to.
#'
#' @param x An object got from a heap.
#' @returns `fmalloc_ref()` returns `x` with its vectors marked; the values
#'   are unchanged (`identical()` to `x`).
#' @seealso [fmalloc_save()]
#' @examples
#' path <- tempfile(fileext = ".bin")
#' heap <- fmalloc_open(path, size_gb = 0.1)
#' fmalloc_save(as.double(1:1e5), "x", heap)
#' fmalloc_close(heap)
#' invisible(gc())
#'
#' heap <- fmalloc_open(path, readonly = TRUE)
#' x <- fmalloc_get("x", heap)
#' length(serialize(x, NULL))              # by value: 800 kB
#' length(serialize(fmalloc_ref(x), NULL)) # by reference: a few hundred bytes
#' y <- unserialize(serialize(fmalloc_ref(x), NULL))
#' identical(x, y)
#' rm(x, y)
#' invisible(gc())
#' fmalloc_close(heap)
#' unlink(path)
#' @export
fmalloc_ref <- function(x) {
  if (missing(x)) .fm_missing_args("x", sys.call())
  call <- sys.call()
  .fm_ref(x, call)
}

.fm_ref <- function(x, call) {
  if (is.atomic(x) && length(x) > 0L) {
    return(.rfm(fmalloc_ref_leaf(x), call))
  }
  if (typeof(x) == "list") {
    attrs <- attributes(x)
    s4 <- isS4(x)
    attributes(x) <- NULL
    for (k in seq_along(x)) {
      if (!is.null(x[[k]])) x[[k]] <- .fm_ref(x[[k]], call)
    }
    attributes(x) <- attrs
    if (s4) x <- asS4(x)
  }
  x
}

# The Unserialize method of the ALTREP classes (src/rust/src/r/named_ref.rs)
# calls this with the reference state.
.fm_reconnect <- function(state) {
  fields <- c("version", "path", "heap_id", "block", "data_offset", "elem", "length", "name")
  ok <- is.list(state) && identical(names(state), fields) && identical(state$version, 2L) &&
    is.character(state$path) && length(state$path) == 1L && !is.na(state$path) &&
    is.character(state$name) && length(state$name) == 1L && !is.na(state$name) &&
    is.character(state$heap_id) && length(state$heap_id) == 1L &&
    all(vapply(state[c("block", "data_offset", "length")], is.double, NA)) &&
    is.integer(state$elem)
  if (!ok) {
    .fmalloc_abort(
      "Rfmalloc: this reference to a heap vector was written by an incompatible version of Rfmalloc",
      "fmalloc_corrupt", NULL
    )
  }
  path <- state$path
  if (!file.exists(path)) {
    .fmalloc_abort(sprintf(
      "Rfmalloc: cannot reconnect a vector sent by reference: heap file '%s' does not exist", path
    ), "fmalloc_not_found", NULL)
  }
  # Read-only unless this process has the heap open for writing (asked
  # first: the lock error of a read-only open costs more than the rest).
  heap <- if (fmalloc_path_open_writable(path)) {
    fmalloc_open(path)
  } else {
    tryCatch(
      fmalloc_open(path, readonly = TRUE),
      fmalloc_locked = function(e) fmalloc_open(path)
    )
  }
  # The vector holds the heap, not this handle: released at once (without
  # the sync of a close), it counts as no open handle of the file (see
  # fmalloc_open()'s `sync`).
  on.exit(fmalloc_heap_release(heap))
  id <- fmalloc_heap_id(heap)
  if (!identical(id, state$heap_id)) {
    .fmalloc_abort(sprintf(
      "Rfmalloc: cannot reconnect a vector sent by reference: '%s' is now a different heap (id %s, expected %s)",
      path, id, state$heap_id
    ), "fmalloc_mismatch", NULL)
  }
  v <- .rfm(fmalloc_named_block_vector(heap, state$block, state$data_offset, state$elem,
                                        state$length, state$name), NULL)
  if (is.null(v)) {
    .fmalloc_abort(sprintf(paste(
      "Rfmalloc: cannot reconnect a vector sent by reference: object '%s' of '%s'",
      "no longer holds its data (it was removed, or saved again)"
    ), state$name, path), "fmalloc_not_found", NULL)
  }
  v
}
