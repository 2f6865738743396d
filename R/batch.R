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
#' objects took is free again. The same holds for a warning that leaves
#' `expr` (made an error by `options(warn = 2)` or by a handler around the
#' batch, or caught by a `tryCatch(warning = )` around it); one that `expr`
#' goes on after (printed, or muffled) commits. R does not tell a batch why
#' its code was left otherwise: another condition caught outside (one
#' signalled by `signalCondition()`, a warning too, or a restart) leaves it
#' like `return()` and commits what it did so far; an
#' error condition signalled without `stop()` and recovered from inside
#' `expr` (a restart) marks the batch failed, so that a `return()` after it
#' rolls the batch back. Catch such conditions inside `expr`. An interrupt
#' (Ctrl-C) that arrives while a heap call in `expr` runs is taken as that
#' call returns, so it rolls the batch back too. SIGUSR1 and SIGUSR2 make R
#' quit at once, running the exit code of every function it leaves: a
#' batch then commits what its code did so far, as when left by `return()`.
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
  if (missing(heap) || missing(expr)) .fm_missing_args(c("heap", "expr"), sys.call())
  call <- sys.call()
  heap <- .fm_heap(heap, call)
  # `expr` may leave without returning: an error or an interrupt that no
  # handler inside it caught (rolled back), or a return()/break of the
  # caller's code (committed, as when it returns: not an error).
  # (No closure is made in this frame: it would keep the frame alive, and
  # with it a second reference to the value, so that an in-place write to
  # an object saved in `expr` would copy it instead of writing the file.)
  # Beginning and ending the batch run with interrupts suspended, and the
  # exit handler is in place before the batch begins: an interrupt between
  # the batch's start and its end (a Ctrl-C as the call starts, or during
  # its commit or rollback) would otherwise leave it open, and every later
  # save would go into it, to be lost.
  batch <- NULL
  done <- FALSE
  seen <- new.env(parent = emptyenv())
  seen$failed <- FALSE
  on.exit(.fm_quietly(if (!done && !is.null(batch)) {
    if (seen$failed) fmalloc_batch_abort(batch) else .rfm(fmalloc_batch_commit(batch, heap), call)
  }))
  .fm_quietly(batch <- .rfm(fmalloc_batch_begin(heap), call))
  fail <- .fm_flag_failure(seen, call)
  value <- withCallingHandlers(expr, error = fail, interrupt = fail, warning = fail)
  # An interrupt that came during the last heap call of `expr` and that R
  # has not taken yet fails the batch too.
  withCallingHandlers(Sys.sleep(0), interrupt = fail)
  .fm_quietly({
    done <- TRUE
    .rfm(fmalloc_batch_commit(batch, heap), call)
  })
  invisible(value)
}

# The batch's condition handler: records in `seen$failed` that an error or
# an interrupt was signalled. A warning fails the batch only if it leaves
# it: one that warning() signalled is signalled again from here, with
# `seen$failed` set while that runs, and the original muffled; whatever
# leaves the batch during that signal (a handler around the batch that
# makes it an error, a tryCatch(warning = ) around it) rolls the batch
# back, and a warning that returns (printed later, or muffled) changes
# nothing. Not with options(warn = 2): R makes the warning an error where
# it was signalled, after the handlers, so that code in `expr` can catch
# that error (try()), and this handler sees it as an error if it does not.
# A condition that `expr` itself signals (stop() or warning() at its top
# level) names the call that evaluates the promise, the
# withCallingHandlers() call here: it is signalled as a condition of
# `call`, the user's fmalloc_batch() call.
.fm_flag_failure <- function(seen, call) {
  force(seen)
  force(call)
  internal <- quote(withCallingHandlers(expr, error = fail, interrupt = fail, warning = fail))
  function(cond) {
    top <- identical(conditionCall(cond), internal)
    if (!inherits(cond, "warning")) {
      seen$failed <- TRUE
      if (top && inherits(cond, "error")) {
        cond$call <- call
        stop(cond)
      }
      return(invisible())
    }
    if (isTRUE(getOption("warn", 0) >= 2) || is.null(findRestart("muffleWarning"))) {
      return(invisible())
    }
    if (top) cond$call <- call
    before <- seen$failed
    seen$failed <- TRUE
    warning(cond)
    seen$failed <- before
    invokeRestart("muffleWarning")
  }
}
