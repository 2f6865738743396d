# Batches: many saves, removals and renames as one atomic commit.

# `sync` as given to fmalloc_open(): "commit", "none", or NULL when not
# chosen (NULL, or the default vector passed on as it is: a wrapper's own
# default, as match.arg() takes it).
.fm_sync_arg <- function(sync, call = NULL) {
  if (is.null(sync) || identical(sync, c("commit", "none"))) {
    return(NULL)
  }
  # One value: another vector is a mistake, not a choice of its first
  # element (c("none", "commit") silently meant no flushes).
  if (!is.character(sync) || length(sync) != 1L || is.na(sync) ||
      !sync %in% c("commit", "none")) {
    .fmalloc_abort(sprintf("Rfmalloc: `sync` must be \"commit\" or \"none\", not %s",
                           .describe_value(sync)), "fmalloc_invalid", call)
  }
  sync
}

#' Group changes into one atomic commit
#'
#' `fmalloc_batch()` evaluates `expr`; every [fmalloc_save()],
#' [fmalloc_rm()] and [fmalloc_rename()] on `heap` inside it becomes part
#' of one commit, made when `expr` returns (also when it leaves early by
#' `return()` or `break` of the code around it). If `expr` signals an error
#' that it does not catch itself (or is interrupted), none of its changes is
#' committed: the catalog is exactly as before, and the space the new
#' objects took is free again.
#' Inside the batch, [fmalloc_get()], [fmalloc_exists()] and [fmalloc_ls()]
#' see the batch's changes; other processes and a crash see none of them
#' until the batch commits.
#'
#' A batch costs one commit (two flushes with `sync = "commit"`) however
#' many objects it changes, so saving many small objects in a batch is much
#' faster than saving them one by one. Batches nest: only the outermost one
#' commits. There are no savepoints: a batch inside another that is rolled
#' back (an error left it) rolls back every change since the outermost
#' batch began. When the outer code catches that error and goes on, its
#' further changes are refused with an error of class
#' `fmalloc_rolled_back`, and each outer batch ends with that error,
#' committing nothing, so that no part of the outer batch is committed
#' without the rest.
#'
#' Writes into the data of objects ([fmalloc_write()], in-place changes of
#' vectors) are not part of a batch: they reach the file at once and a
#' rollback does not undo them. A value written there that relies on a
#' change of the same batch (a label of a factor level added in the batch
#' with [fmalloc_set_attr()]) stays when the batch rolls back: add the
#' level in a batch of its own, or outside one, first.
#'
#' @param heap A heap handle from [fmalloc_open()], or `NULL` for the
#'   session's default heap.
#' @param expr Code to run.
#' @returns The value of `expr`, invisibly.
#' @seealso [fmalloc_open()] for `sync`, [fmalloc_sync()].
#' @examples
#' path <- tempfile(fileext = ".bin")
#' heap <- fmalloc_open(path, size_gb = 0.1)
#' fmalloc_batch(heap, {
#'   for (i in 1:100) fmalloc_save(i * 1.5, paste0("x", i), heap)
#' })
#' nrow(fmalloc_ls(heap))
#' # An error rolls the whole batch back:
#' try(fmalloc_batch(heap, {
#'   fmalloc_rm("x1", heap)
#'   stop("changed my mind")
#' }))
#' fmalloc_exists("x1", heap)
#' fmalloc_close(heap)
#' unlink(path)
#' @export
fmalloc_batch <- function(heap, expr) {
  call <- sys.call()
  heap <- .fm_heap(heap, call)
  batch <- .rfm(fmalloc_batch_begin(heap), call)
  # `expr` may leave without returning: an error or an interrupt that no
  # handler inside it caught (rolled back), or a return()/break of the
  # caller's code (committed, as when it returns: not an error).
  # (No closure is made in this frame: it would keep the frame alive, and
  # with it a second reference to the value, so that an in-place write to
  # an object saved in `expr` would copy it instead of writing the file.)
  done <- FALSE
  seen <- new.env(parent = emptyenv())
  seen$failed <- FALSE
  on.exit(if (!done) {
    if (seen$failed) fmalloc_batch_abort(batch) else .rfm(fmalloc_batch_commit(batch, heap), call)
  })
  fail <- .fm_flag_failure(seen, call)
  value <- withCallingHandlers(expr, error = fail, interrupt = fail)
  done <- TRUE
  .rfm(fmalloc_batch_commit(batch, heap), call)
  invisible(value)
}

# A condition handler that records in `seen$failed` that one was signalled.
# An error signalled by `expr` itself (stop() at its top level) names the
# call that evaluates the promise, withCallingHandlers(...) here: it is
# signalled again as an error of `call` (the user's fmalloc_batch() call).
.fm_flag_failure <- function(seen, call) {
  force(seen)
  force(call)
  function(cond) {
    seen$failed <- TRUE
    if (inherits(cond, "error") &&
        identical(conditionCall(cond), quote(withCallingHandlers(expr, error = fail, interrupt = fail)))) {
      cond$call <- call
      stop(cond)
    }
  }
}
