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
#' replaces the damaged record. Nothing is recovered silently. A commit
#' that was flushed to disk (the default `sync = "commit"`, or
#' [fmalloc_sync()]) cannot be torn by a crash: when its catalog is damaged
#' anyway (a bad sector, a changed byte), a writable open would lose it for
#' good at its next commit, so it is refused with an error of class
#' `fmalloc_corrupt` and the file is left unchanged. Open such a file with
#' `readonly = TRUE` to read the objects that are intact (those in a
#' damaged part of the catalog give `fmalloc_corrupt` errors), and with
#' `recover = TRUE` to write to it from the previous commit on.
#'
#' `fmalloc_close()` releases the handle and runs R's garbage collector, so
#' that vectors nothing refers to any more let go of the file. Vectors still
#' in use stay valid, and keep the file open (and locked: no other process
#' can open it for writing, nor this one in the other mode) until they are
#' garbage collected; `fmalloc_close()` then says how many there are, in a
#' message of class `fmalloc_pinned`: `rm()` them (or let them go out of
#' scope) and the file is released at the next garbage collection. Closing
#' twice is harmless; any other use of a closed handle gives an error of
#' class `fmalloc_closed`. Processes forked from this session while it had
#' the heap open (`parallel::mclapply()`, `mcparallel()`, a fork cluster)
#' share its lock: while one of them runs, the file stays locked after the
#' session closed it, and an open of it (by this session too) is
#' `fmalloc_locked`; it is released when they have ended. That keeps
#' another writer from reusing space that a worker may still write to.
#'
#' R reads the file through a memory map, as every memory-mapped store
#' does: do not truncate, overwrite or replace a heap file while a session
#' has it open. Reading a vector past the end of a truncated file kills R
#' (a bus error, SIGBUS; [fmalloc_check()] reports the truncation instead
#' of reading), and a file overwritten in place gives wrong values. Moving
#' or deleting it is harmless: the session keeps the file it opened.
#' Opening, saving, getting and writing run to their end once begun: an
#' interrupt (Ctrl-C) takes effect when the call returns (for
#' `fmalloc_get()`, at R's next check for interrupts after it), and R
#' ignores SIGUSR1 and SIGUSR2 meanwhile. See [fmalloc_batch()] for
#' batches.
#'
#' `local_fmalloc_heap()` and `with_fmalloc_heap()` open a heap for a
#' while, in the manner of the withr package: `local_fmalloc_heap()` opens
#' it, makes it the session's default heap (see [init_fmalloc()]) and
#' closes it, restoring the previous default, when the function that called
#' it returns (or `.local_envir` ends); `with_fmalloc_heap()` evaluates
#' `code` with the heap open as the default heap and closes it afterwards.
#'
#' @param path Path of the heap file.
#' @param size_gb Initial size of a new heap in GiB (2^30 bytes), or `NULL`
#'   for the default. The file is sparse: disk space is taken only for what
#'   is allocated in it (a vector's space is reserved on disk when it is
#'   created, written or not, so that a full disk is an `fmalloc_full` error
#'   then rather than a crash later; freed space of 8 MiB or more is given
#'   back), and the heap grows when it runs out of space. Ignored when the
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
#'   commit. The handles of one file in a session share one open heap and
#'   its mode (`fmalloc_info()` shows it): an open beside other open handles
#'   takes their mode when `sync` is not given (or is `NULL`, or the default
#'   `c("commit", "none")` as such), and asking for the other mode there is
#'   an error (class `fmalloc_invalid`; close the other handles first).
#' @param recover Open for writing even when the newest commit is damaged,
#'   at the previous commit (see Details); the warning of class
#'   `fmalloc_recovered` says what is lost. Without effect for a heap whose
#'   newest commit reads back, and for `readonly = TRUE` (which falls back
#'   by itself, changing nothing).
#' @param verbose Print what was done. Defaults to the option
#'   `fmalloc.verbose`, which defaults to `FALSE`.
#' @param heap A heap handle returned by `fmalloc_open()`. For
#'   `fmalloc_info()` and `fmalloc_sync()`, `NULL` (the default) stands for
#'   the session's default heap (see [init_fmalloc()]).
#' @param code Code to evaluate with the heap open, as the default heap.
#' @param .local_envir The environment whose end closes the heap: by
#'   default the function that called `local_fmalloc_heap()`.
#'
#' @returns `fmalloc_open()` and `local_fmalloc_heap()` return a heap handle
#'   of class `fmalloc_heap` (`local_fmalloc_heap()` invisibly); its
#'   attribute `"created"` is `TRUE` when the file was newly initialised.
#'   `with_fmalloc_heap()` returns the value of `code`.
#'   `fmalloc_close()` and `fmalloc_sync()` return `NULL` invisibly;
#'   `fmalloc_sync()` returns once everything written so far is on disk.
#'   `fmalloc_info()` returns a one-row data frame with columns `path`,
#'   `heap_id` (the heap's random identity, hex), `readonly`, `sync` (the
#'   open heap's sync mode, `"commit"` or `"none"`; `NA` when read-only), `size` (bytes of
#'   the heap file), `disk` (bytes the file takes on disk: less than `size`
#'   where the file is sparse; `NA` when the system cannot say), `used` and
#'   `free` (bytes inside it) and `objects` (the number of named objects).
#'
#'   Space comes back: when freeing an object or vector (say, after
#'   [fmalloc_rm()]) leaves a free region of 8 MiB or more (with the free
#'   space around it), the whole 4 MiB chunks inside that region are given
#'   back to the file system (hole punching on Linux, macOS and NTFS), so
#'   `disk` drops while `size` stays; they take disk space again when reused.
#'   Vectors still alive when a session ends (or a crash) are freed by the
#'   next writable open, which gives their space back the same way.
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
#' # A heap open for the duration of a function (or of `code`), as the
#' # default heap:
#' count_objects <- function(path) {
#'   local_fmalloc_heap(path, readonly = TRUE)
#'   nrow(fmalloc_ls())
#' } # closed here
#' count_objects(path)
#' with_fmalloc_heap(path, fmalloc_exists("x"), readonly = TRUE)
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
                         sync = c("commit", "none"), recover = FALSE) {
  if (missing(path)) .fm_missing_args("path", sys.call())
  # The first open of a session is mostly R lazy-loading the functions it
  # calls (bench/catalog.R, open+get): the common path calls few, and what
  # only some opens need is in functions of its own.
  .check_path(path, "path")
  if (!is.null(size_gb)) .check_size_gb(size_gb)
  .check_flag(readonly, "readonly")
  .check_flag(verbose, "verbose")
  .check_flag(recover, "recover")
  # NULL: not chosen (the heap's mode when other handles have it open).
  sync <- if (missing(sync)) NULL else .fm_sync_arg(sync, sys.call())

  size_bytes <- if (is.null(size_gb)) NULL else size_gb * 1024^3
  # Errors in the returned form (see R/error.R), so no .rfm() here.
  path <- .absolute_path(path)
  ptr <- .fm_uninterrupted( # see .rfm()
    .Call(savvy_fmalloc_heap_open__impl, path, readonly, recover, size_bytes, sync)
  )
  if (inherits(ptr, "fmalloc_failure")) .fmalloc_raise(unclass(ptr), sys.call())
  heap <- .savvy_wrap_FmallocHeap(ptr)
  class(heap) <- c("fmalloc_heap", class(heap))
  # The pointer of the handle just made goes to Rust as it is: the
  # wrappers' check of the handle would only find it valid.
  attr(heap, "created") <- .Call(savvy_fmalloc_heap_created__impl, ptr)
  why <- .Call(savvy_fmalloc_heap_recovery__impl, ptr)
  if (!is.null(why)) .fmalloc_warn(fmalloc_heap_path(heap), why, "fmalloc_recovered", sys.call())
  if (verbose) .fmalloc_say_opened(heap, readonly, sys.call())
  heap
}

# fmalloc_open(verbose = TRUE)'s message.
.fmalloc_say_opened <- function(heap, readonly, call) {
  info <- .rfm(fmalloc_heap_info(heap), call)
  message(sprintf(
    "Rfmalloc: %s heap '%s' (%s, %s used)%s",
    if (attr(heap, "created")) "created" else "opened", info$path,
    .format_bytes(info$size), .format_bytes(info$used),
    if (readonly) ", read-only" else ""
  ))
}

#' @rdname fmalloc_open
#' @export
fmalloc_close <- function(heap, verbose = getOption("fmalloc.verbose", FALSE)) {
  if (missing(heap)) .fm_missing_args("heap", sys.call())
  .check_heap(heap)
  .check_flag(verbose, "verbose")
  if (fmalloc_heap_is_closed(heap)) {
    return(invisible(NULL))
  }
  path <- fmalloc_heap_path(heap)
  .rfm(fmalloc_heap_close(heap))
  if (verbose) {
    message(sprintf("Rfmalloc: closed heap '%s'", path))
  }
  .fmalloc_report_holders(path, sys.call())
  invisible(NULL)
}

# After a handle on `path` was closed: collects garbage (vectors nothing
# refers to release the file) and, when vectors of this session still hold
# the file and no other handle has it open, says so in a message of class
# `fmalloc_pinned`.
.fmalloc_report_holders <- function(path, call) {
  held <- fmalloc_path_holders(path)
  if (is.null(held) || held$handles > 0) {
    return(invisible(NULL))
  }
  gc(verbose = FALSE)
  held <- fmalloc_path_holders(path)
  if (is.null(held) || held$handles > 0) {
    return(invisible(NULL))
  }
  n <- held$vectors
  mode <- if (held$readonly) "read-only" else "for writing"
  blocked <- if (held$readonly) {
    "no process can open it for writing"
  } else {
    "no other process can open it"
  }
  msg <- if (n == 1) {
    sprintf(paste(
      "Rfmalloc: closed heap '%s', but 1 vector made from it is still in use in this",
      "session and keeps the file open (%s) until it is garbage collected: %s",
      "before. rm() it, or let it go out of scope, to release the file."
    ), path, mode, blocked)
  } else {
    sprintf(paste(
      "Rfmalloc: closed heap '%s', but %s made from it are still in use in this",
      "session and keep the file open (%s) until they are garbage collected: %s",
      "before. rm() them, or let them go out of scope, to release the file."
    ), path, if (n == 0) "objects" else paste(format(n, scientific = FALSE), "vectors"),
    mode, blocked)
  }
  if (.holds_heap_vector(.Last.value)) {
    msg <- paste(msg, paste(
      "The value of the previous top-level call holds a heap vector (an",
      "invisible one too, such as fmalloc_save()'s): R keeps it as .Last.value",
      "until the next top-level call has run; gc() then releases the file."
    ))
  }
  message(structure(
    class = c("fmalloc_pinned", "fmalloc_message", "message", "condition"),
    list(message = paste0(msg, "\n"), call = call)
  ))
  invisible(NULL)
}

# Whether `x` is a heap vector or a list (data frame) with one as an
# element.
.holds_heap_vector <- function(x) {
  if (is.atomic(x)) {
    return(is_fmalloc(x))
  }
  is.list(x) && any(vapply(x, function(e) is.atomic(e) && is_fmalloc(e), NA))
}

#' @rdname fmalloc_open
#' @export
local_fmalloc_heap <- function(path, size_gb = NULL, readonly = FALSE,
                               verbose = getOption("fmalloc.verbose", FALSE),
                               sync = c("commit", "none"), recover = FALSE,
                               .local_envir = parent.frame()) {
  if (missing(path)) .fm_missing_args("path", sys.call())
  if (!is.environment(.local_envir)) {
    .invalid(sprintf("`.local_envir` must be an environment, not %s",
                     .describe_value(.local_envir)), sys.call())
  }
  if (identical(.local_envir, globalenv())) {
    .invalid(paste(
      "local_fmalloc_heap() closes the heap when the function that called it",
      "returns; at top level use fmalloc_open() and fmalloc_close(), or",
      "with_fmalloc_heap(path, code)"
    ), sys.call())
  }
  heap <- fmalloc_open(path, size_gb = size_gb, readonly = readonly, verbose = verbose,
                       sync = sync, recover = recover)
  # The new default and the exit code that restores the old one, with no
  # interrupt between them.
  .fm_quietly({
    old <- .fmalloc_state$heap
    .fmalloc_state$heap <- heap
    .defer(.fmalloc_restore_default(heap, old, verbose), .local_envir)
  })
  invisible(heap)
}

#' @rdname fmalloc_open
#' @export
with_fmalloc_heap <- function(path, code, size_gb = NULL, readonly = FALSE,
                              verbose = getOption("fmalloc.verbose", FALSE),
                              sync = c("commit", "none"), recover = FALSE) {
  if (missing(path) || missing(code)) .fm_missing_args(c("path", "code"), sys.call())
  local_fmalloc_heap(path, size_gb = size_gb, readonly = readonly, verbose = verbose,
                     sync = sync, recover = recover)
  force(code)
}

# Closes `heap` and makes `old` the default heap again, as withr restores
# what it changed: whatever the code in the scope did to the default
# (cleanup_fmalloc(), init_fmalloc()), the caller finds its own default
# when the scope ends, unless it was closed meanwhile (fmalloc_close()).
# A default that init_fmalloc() opened in the scope is closed, as the next
# init_fmalloc() would close it.
.fmalloc_restore_default <- function(heap, old, verbose) .fm_quietly({
  cur <- .fmalloc_state$heap
  .fmalloc_state$heap <- if (!is.null(old) && !fmalloc_heap_is_closed(old)) old
  if (!is.null(cur) && !identical(cur, heap) && !identical(cur, old)) {
    fmalloc_close(cur, verbose = FALSE)
  }
  fmalloc_close(heap, verbose = verbose)
})

# withr::defer() without withr: runs `expr` when the frame `envir` exits
# (before what was registered there earlier, as withr does).
.defer <- function(expr, envir) {
  thunk <- as.call(list(function() expr))
  do.call(base::on.exit, list(thunk, TRUE, FALSE), envir = envir)
  invisible(NULL)
}

#' @rdname fmalloc_open
#' @export
fmalloc_info <- function(heap = NULL) {
  heap <- .heap_or_default(heap)
  info <- .rfm(fmalloc_heap_info(heap))
  as.data.frame(info, stringsAsFactors = FALSE)
}

#' @rdname fmalloc_open
#' @export
fmalloc_sync <- function(heap = NULL) {
  heap <- .heap_or_default(heap)
  .rfm(fmalloc_heap_sync(heap))
  invisible(NULL)
}

#' Print, format, summarise and index heap handles
#'
#' A heap handle prints as its path, mode (read-write or read-only), file
#' size, disk use (the file is sparse: only allocated space takes disk space),
#' used and free bytes and the number of named objects. `format()` returns
#' those lines as a character vector, `print()` writes them and returns the
#' handle invisibly. `summary()` returns an object of class
#' `summary.fmalloc_heap`, a list with the same fields (and `objects`, the
#' catalog as [fmalloc_ls()] gives it), which prints the heap's lines and
#' its objects.
#'
#' A heap is also indexed by object name, like an environment: `heap$x` and
#' `heap[["x"]]` are `fmalloc_get("x", heap)`, `names(heap)` gives the names
#' of its objects (`fmalloc_ls(heap)$name`), `length(heap)` their number and
#' `as.list(heap)` all of them in a named list (each as [fmalloc_get()]
#' returns it: vectors stay in the file, nothing is copied), so `lapply()`
#' and `sapply()` run over a heap's objects, and `heap[[k]]` is the `k`-th
#' of `names(heap)`. A handle cannot be assigned into:
#' `heap$x <- value` is an error of class `fmalloc_invalid` that points to
#' [fmalloc_save()].
#'
#' @param x,object A heap handle from [fmalloc_open()] (or a
#'   `summary.fmalloc_heap` object).
#' @param name,i The name of an object in the heap (for `[[`, or its
#'   position in `names(heap)`).
#' @param value Not used: assigning into a heap is an error.
#' @param e1,e2 Operands of an operator: an error for heap handles.
#' @param ... Ignored.
#' @returns `format()`: a character vector, one element per line.
#'   `print()`: `x`, invisibly. `summary()`: a `summary.fmalloc_heap`
#'   object (a list with `path`, `heap_id`, `mode`, `closed`, `size`,
#'   `disk`, `used`, `free`, `n_objects` and `objects`). `$` and `[[`: the
#'   object, as [fmalloc_get()] returns it. `names()`: a character vector.
#'   `length()`: the number of objects (0 for a closed handle, or one
#'   from another session). `as.list()`: a named list of the
#'   objects. Operators (`==`, `+`, ...) on handles are errors of class
#'   `fmalloc_invalid`.
#' @examples
#' path <- tempfile(fileext = ".bin")
#' heap <- fmalloc_open(path, size_gb = 1)
#' fmalloc_save(c(a = 1, b = 2), "x", heap)
#' heap
#' format(heap)
#' summary(heap)
#' names(heap)
#' length(heap)
#' heap$x
#' sapply(heap, length)
#' fmalloc_close(heap)
#' unlink(path)
#' @name fmalloc_heap-methods
NULL

#' @rdname fmalloc_heap-methods
#' @export
format.fmalloc_heap <- function(x, ...) {
  s <- summary(x)
  .format_heap_summary(s)
}

.format_heap_summary <- function(s) {
  if (isTRUE(s$closed)) {
    return(sprintf("<fmalloc_heap> %s (closed)", s$path))
  }
  if (is.na(s$mode)) {
    return(sprintf("<fmalloc_heap> %s", s$path))
  }
  c(
    sprintf("<fmalloc_heap> %s", s$path),
    sprintf("  mode:    %s", s$mode),
    sprintf("  size:    %s", .format_bytes(s$size)),
    sprintf("  disk:    %s", if (is.na(s$disk)) "unknown" else .format_bytes(s$disk)),
    sprintf("  used:    %s", .format_bytes(s$used)),
    sprintf("  free:    %s", .format_bytes(s$free)),
    sprintf("  objects: %s", format(s$n_objects, scientific = FALSE))
  )
}

#' @rdname fmalloc_heap-methods
#' @export
print.fmalloc_heap <- function(x, ...) {
  cat(format(x, ...), sep = "\n")
  invisible(x)
}

#' @rdname fmalloc_heap-methods
#' @export
summary.fmalloc_heap <- function(object, ...) {
  na <- NA_real_
  s <- list(path = NA_character_, heap_id = NA_character_, mode = NA_character_,
            closed = NA, size = na, disk = na, used = na, free = na,
            n_objects = na, objects = NULL)
  if (!.is_live_handle(object)) {
    s$path <- "(not a heap handle of this R session: open the file again with fmalloc_open())"
  } else if (fmalloc_heap_is_closed(object)) {
    s$path <- fmalloc_heap_path(object)
    s$closed <- TRUE
  } else {
    info <- .rfm(fmalloc_heap_info(object))
    s$path <- info$path
    s$heap_id <- info$heap_id
    s$mode <- if (info$readonly) "read-only" else "read-write"
    s$closed <- FALSE
    s$size <- info$size
    s$disk <- info$disk
    s$used <- info$used
    s$free <- info$free
    s$n_objects <- info$objects
    s$objects <- fmalloc_ls(object)
  }
  structure(s, class = "summary.fmalloc_heap")
}

#' @rdname fmalloc_heap-methods
#' @export
print.summary.fmalloc_heap <- function(x, ...) {
  cat(.format_heap_summary(x), sep = "\n")
  if (!is.null(x$objects) && nrow(x$objects) > 0L) {
    cat("\n")
    print(x$objects[, c("name", "class", "length", "dim", "bytes", "modified")],
          row.names = FALSE)
  }
  invisible(x)
}

# A heap handle is an environment made by savvy that holds the external
# pointer `.ptr` (no methods: the package's code passes the handle to the
# free functions of r::api::heap, such as fmalloc_heap_path()), so for
# everyone `$` and `[[` get objects by name.

#' @rdname fmalloc_heap-methods
#' @export
`$.fmalloc_heap` <- function(x, name) {
  fmalloc_get(name, x)
}

#' @rdname fmalloc_heap-methods
#' @export
`[[.fmalloc_heap` <- function(x, i, ...) {
  if (missing(i)) {
    .invalid("heap[[ ]] needs the name or position of an object", sys.call())
  }
  if (is.numeric(i) && length(i) == 1L && !is.na(i)) {
    # By position, as in a list: names(heap)[[i]] (for seq_along() loops).
    objects <- names(x)
    if (i < 1 || i > length(objects)) {
      .fmalloc_abort(sprintf("Rfmalloc: heap[[%s]]: the heap has %d objects", format(i), length(objects)),
                     "fmalloc_bounds", sys.call())
    }
    i <- objects[[i]]
  }
  fmalloc_get(i, x)
}

#' @rdname fmalloc_heap-methods
#' @export
`$<-.fmalloc_heap` <- function(x, name, value) {
  .heap_assign_error(name, sys.call())
}

#' @rdname fmalloc_heap-methods
#' @export
`[[<-.fmalloc_heap` <- function(x, i, value) {
  .heap_assign_error(i, sys.call())
}

#' @rdname fmalloc_heap-methods
#' @export
`[.fmalloc_heap` <- function(x, i, ...) {
  .invalid(paste(
    "a heap is not subsettable with `[`; get one object with heap[[name]]",
    "or fmalloc_get(name, heap), several with lapply(names, fmalloc_get, heap)"
  ), sys.call())
}

#' @rdname fmalloc_heap-methods
#' @export
`[<-.fmalloc_heap` <- function(x, i, value) {
  .heap_assign_error(i, sys.call())
}

#' @rdname fmalloc_heap-methods
#' @export
`names<-.fmalloc_heap` <- function(x, value) {
  .invalid(paste(
    "the names of a heap are the names of its objects and cannot be assigned;",
    "rename an object with fmalloc_rename(from, to, heap)"
  ), sys.call())
}

.heap_assign_error <- function(name, call) {
  .invalid(sprintf(paste(
    "a heap cannot be assigned into; save an object under a name with",
    "fmalloc_save(value, %s, heap) (overwrite = TRUE to replace it)"
  ), .describe_value(name)), call)
}

#' @rdname fmalloc_heap-methods
#' @export
names.fmalloc_heap <- function(x) {
  fmalloc_ls(x)$name
}

#' @rdname fmalloc_heap-methods
#' @export
length.fmalloc_heap <- function(x) {
  # Never an error: str(), the debugger and IDEs take the length of any
  # object they show, a closed handle too.
  if (!.is_live_handle(x) || fmalloc_heap_is_closed(x)) {
    return(0L)
  }
  length(names(x))
}

#' @rdname fmalloc_heap-methods
#' @export
as.list.fmalloc_heap <- function(x, ...) {
  objects <- names(x)
  stats::setNames(lapply(objects, fmalloc_get, x), objects)
}

#' @rdname fmalloc_heap-methods
#' @export
Ops.fmalloc_heap <- function(e1, e2) {
  .invalid(sprintf(paste(
    "heap handles have no `%s`; identical(a, b) tells whether two handles",
    "are the same, summary(heap)$path is the file of one"
  ), .Generic), sys.call())
}

# fmalloc_ls()'s data frame: of class "fmalloc_ls" too, whose print method
# shows the counts (`length`, `bytes`) as whole numbers even when they are
# doubles (beyond .Machine$integer.max), never as 8e+09.
.fmalloc_ls_frame <- function(df) {
  class(df) <- c("fmalloc_ls", "data.frame")
  df
}

#' @export
print.fmalloc_ls <- function(x, ...) {
  op <- options(scipen = 100L)
  on.exit(options(op))
  NextMethod()
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
