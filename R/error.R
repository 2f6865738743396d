# Errors: one mechanism. Rust reports every failure as a tagged message
# ("<fmalloc_corrupt> Rfmalloc: ...", src/rust/src/r/error.rs), and one
# decoder, .fmalloc_raise(), turns it into a condition of class
# c(<subclass>, "fmalloc_error", "error", "condition") raised from the
# user's call. The message reaches it in one of three ways, all decoded the
# same:
#   * raised by a savvy call: every exported function calls into Rust
#     through .rfm(), whose handler passes tagged messages to
#     .fmalloc_raise();
#   * returned, as a string of class "fmalloc_failure", by the calls that
#     cannot be wrapped in .rfm() (create_fmalloc_vector()'s hot path,
#     fmalloc_get() and fmalloc_save(), see r::error::returned_form) and by
#     fmalloc_open()'s, which need not (a session's first open is mostly R
#     lazy-loading the functions it calls): the caller passes it to
#     .fmalloc_raise();
#   * from ALTREP methods, which R calls itself: Rust calls .fmalloc_raise()
#     (r::error::guard).
# Rust tags every message it makes (fmalloc_internal for what can only be a
# bug). R errors raised inside Rust calls (such as R's own "cannot allocate")
# are not Rfmalloc's and pass through .rfm() unchanged.

.fmalloc_tag <- "^<(fmalloc_[a-z_]+)> "

# Raises the tagged error message `msg` as a condition of its class, from
# `call`; a message without a tag (never made by Rust: see
# r::error::message_of) as fmalloc_internal.
.fmalloc_raise <- function(msg, call) {
  tag <- regmatches(msg, regexpr(.fmalloc_tag, msg))
  if (length(tag) != 1L) {
    .fmalloc_abort(msg, "fmalloc_internal", call)
  }
  .fmalloc_abort(substring(msg, nchar(tag) + 1L), sub(.fmalloc_tag, "\\1", tag), call)
}

# Every call into the Rust core runs with interrupts suspended (a Ctrl-C
# takes effect when it returns): R raises an interrupt wherever it checks
# for one, and it does inside R's allocations, which Rust code makes
# (through savvy) at points where a jump out of it would skip Rust's
# clean-up: an interrupted save kept the space it had taken and a
# reference to the heap until the session ended. Not for
# create_fmalloc_vector()'s small vectors and ALTREP methods, whose cost
# is counted in microseconds.
.rfm <- function(expr, call = sys.call(-1L)) {
  withCallingHandlers(.fm_uninterrupted(expr), error = .rfm_handler(call))
}

# `expr` with interrupts suspended, then any interrupt that came meanwhile,
# taken as the call returns: R would take it at its next check, which may
# come after more heap calls (a save after the interrupted one, a batch's
# commit). Not inside .fm_quietly() (Sys.sleep() takes an interrupt even
# while they are suspended). The value is not bound here: see
# .rfm_handler().
.fm_uninterrupted <- function(expr) {
  if (.fmalloc_state$quiet == 0L) on.exit(Sys.sleep(0))
  suspendInterrupts(expr)
}

# `expr` with interrupts suspended throughout, heap calls in it included:
# steps that must not be parted (a batch's begin and the record of it, the
# restore of a default heap).
.fm_quietly <- function(expr) {
  .fmalloc_state$quiet <- .fmalloc_state$quiet + 1L
  on.exit(.fmalloc_state$quiet <- .fmalloc_state$quiet - 1L)
  suspendInterrupts(expr)
}

# The handler is made here, not inside .rfm(): a closure created in .rfm()
# would keep .rfm()'s frame alive, and with it the forced promise `expr`,
# which holds a reference to the value. A vector returned through .rfm()
# would then be shared (reference count 2) and R would copy it on its first
# in-place modification instead of writing to the heap.
.rfm_handler <- function(call) {
  force(call)
  function(e) {
    msg <- conditionMessage(e)
    if (!inherits(e, "fmalloc_error") && grepl(.fmalloc_tag, msg)) {
      .fmalloc_raise(msg, call)
    }
  }
}

.fmalloc_condition <- function(message, class, call = NULL) {
  structure(
    class = unique(c(class, "fmalloc_error", "error", "condition")),
    list(message = message, call = call)
  )
}

.fmalloc_abort <- function(message, class = "fmalloc_error", call = sys.call(-1L)) {
  stop(.fmalloc_condition(message, class, call))
}

# Warnings: the one way Rfmalloc warns. `class` is the warning's own class
# ("fmalloc_recovered", "fmalloc_damaged"); the condition is of class
# c(class, "fmalloc_warning", "warning", "condition"). `why` comes from Rust
# (untagged: a warning is not an error); the message names the heap.
.fmalloc_warn <- function(heap_path, why, class, call = sys.call(-1L)) {
  warning(structure(
    class = unique(c(class, "fmalloc_warning", "warning", "condition")),
    list(message = sprintf("Rfmalloc: heap '%s': %s", heap_path, why), call = call)
  ))
}

# Argument checks: fmalloc_invalid errors raised from the exported function
# that received the argument (`call` is that function's call).

.invalid <- function(message, call) {
  .fmalloc_abort(paste0("Rfmalloc: ", message), "fmalloc_invalid", call)
}

# Raises fmalloc_invalid naming the arguments among `args` that the calling
# function was called without (R's own error says the same without the
# package's class). Called only when one is missing, so the check costs a
# call nothing: `if (missing(a) || missing(b)) .fm_missing_args(...)`.
.fm_missing_args <- function(args, call, env = parent.frame()) {
  gone <- args[vapply(args, function(a) eval(call("missing", as.name(a)), env), NA)]
  .invalid(sprintf(
    "%s %s %s missing, with no default", if (length(gone) > 1L) "arguments" else "argument",
    paste0("`", gone, "`", collapse = " and "), if (length(gone) > 1L) "are" else "is"
  ), call)
}

# The bad value of an argument, for its error message: "\"abc\"", "NA",
# "42", "NULL", "a character vector of length 2", "<data.frame>", "a
# function". The Rust side has the same for the arguments it checks
# (src/rust/src/r/describe.rs).
.describe_value <- function(x) {
  if (is.null(x)) {
    return("NULL")
  }
  if (is.function(x)) {
    return("a function")
  }
  if (is.environment(x) && !is.object(x)) {
    return("an environment")
  }
  if (is.object(x)) {
    return(paste0("<", class(x)[[1L]], ">"))
  }
  if (is.atomic(x) && length(x) == 1L) {
    if (is.na(x)) {
      return("NA")
    }
    if (is.character(x)) {
      if (isTRUE(nchar(x, allowNA = TRUE) > 40L)) {
        x <- paste0(substr(x, 1L, 40L), "...")
      }
      return(encodeString(x, quote = "\""))
    }
    return(paste0(format(x, digits = 15L), if (is.integer(x)) "L" else ""))
  }
  if (is.list(x)) {
    return(sprintf("a list of length %d", length(x)))
  }
  sprintf("%s %s vector of length %d", if (typeof(x) == "integer") "an" else "a",
          typeof(x), length(x))
}

# The checks are on the path of every call, and R lazy-loads a function at
# its first call (most of what a session's first fmalloc_open() and
# fmalloc_get() cost): each check's error is built by a function of its own,
# loaded only when the check fails.

.check_string <- function(x, arg, call = sys.call(-1L)) {
  if (!is.character(x) || length(x) != 1L || is.na(x) || !nzchar(x)) {
    .invalid_string(x, arg, call)
  }
  invisible(x)
}

.invalid_string <- function(x, arg, call) {
  .invalid(sprintf("`%s` must be a single non-empty string, not %s", arg,
                   .describe_value(x)), call)
}

# A file name: a single non-empty string that R can translate to UTF-8 (R's
# own file functions stop with an unclassed error on the others: a string
# marked "bytes", or invalid in the session's encoding).
.check_path <- function(x, arg, call = sys.call(-1L)) {
  .check_string(x, arg, call)
  if (!.utf8_ok(x)) {
    .invalid_path(x, arg, call)
  }
  invisible(x)
}

# Whether a string is text R translates to UTF-8 exactly: not marked as
# bytes, and valid UTF-8 as it is or translatable. (enc2utf8() of a native
# string with invalid bytes in a UTF-8 session escapes them as "<c3>":
# a different, valid string.)
.utf8_ok <- function(x) {
  Encoding(x) != "bytes" && (validUTF8(x) || .translatable(x))
}

# Whether a string that is not valid UTF-8 as it is becomes valid UTF-8:
# latin1 does; so may a native string in a session whose encoding is not
# UTF-8 (in a UTF-8 session its invalid bytes are what makes R's file
# functions fail).
.translatable <- function(x) {
  Encoding(x) == "latin1" ||
    (Encoding(x) == "unknown" && !isTRUE(l10n_info()[["UTF-8"]]) &&
       isTRUE(tryCatch(validUTF8(enc2utf8(x)), error = function(e) FALSE)))
}

.invalid_path <- function(x, arg, call) {
  bytes <- as.integer(charToRaw(x))
  shown <- vapply(bytes, function(b) {
    if (b < 128L) rawToChar(as.raw(b)) else sprintf("<%02x>", b)
  }, "")
  .invalid(sprintf(
    "`%s` must be a file name that R can translate to UTF-8, not \"%s\" (bytes marked %s)",
    arg, paste(shown, collapse = ""),
    if (Encoding(x) == "bytes") "\"bytes\"" else "as the session's encoding, but invalid in it"
  ), call)
}

# An object name: a single non-empty string, returned in UTF-8 (the catalog's
# encoding), whatever its marked encoding (latin1 names were read as empty).
.check_name <- function(x, arg, call = sys.call(-1L)) {
  .check_string(x, arg, call)
  if (!.utf8_ok(x)) {
    .invalid_name(x, arg, call)
  }
  enc2utf8(x)
}

.invalid_name <- function(x, arg, call) {
  .invalid(sprintf(if (Encoding(x) == "bytes") {
    "`%s` must be text, not a string marked as bytes"
  } else {
    "`%s` is not valid text in its encoding"
  }, arg), call)
}

.check_flag <- function(x, arg, call = sys.call(-1L)) {
  if (!is.logical(x) || length(x) != 1L || is.na(x)) {
    .invalid_flag(x, arg, call)
  }
  invisible(x)
}

.invalid_flag <- function(x, arg, call) {
  .invalid(sprintf("`%s` must be TRUE or FALSE, not %s", arg, .describe_value(x)), call)
}

.check_size_gb <- function(x, arg = "size_gb", call = sys.call(-1L)) {
  if (is.null(x)) {
    return(invisible(x))
  }
  if (!is.numeric(x) || length(x) != 1L || is.na(x) || !is.finite(x) || x <= 0) {
    .invalid(sprintf("`%s` must be NULL or a single positive number of GiB, not %s", arg,
                     .describe_value(x)), call)
  }
  invisible(x)
}

.check_heap <- function(x, arg = "heap", call = sys.call(-1L)) {
  if (!inherits(x, "fmalloc_heap") || !.is_live_handle(x)) {
    .invalid_heap(x, arg, call)
  }
  invisible(x)
}

.invalid_heap <- function(x, arg, call) {
  if (!inherits(x, "fmalloc_heap")) {
    .invalid(sprintf("`%s` must be a heap handle from fmalloc_open(), not %s", arg,
                     .describe_value(x)), call)
  }
  .invalid(sprintf(paste(
    "`%s` is not a heap handle of this R session (handles cannot be saved",
    "and restored, e.g. with saveRDS() or a workspace image: open the file",
    "again with fmalloc_open())"), arg), call)
}

# Whether `x` holds the external pointer of a handle fmalloc_open() made in
# this session and that is still alive (Rust keeps the list: anything else
# in `.ptr` would be dereferenced by savvy's methods and crash R). One call
# into Rust (r::args::handle_in): it runs before every call that takes a
# handle, several times per save.
.is_live_handle <- function(x) {
  if (.promise_lookup && .ptr_unforced(x)) {
    return(FALSE)
  }
  .Call(savvy_fmalloc_handle_live__impl, x)
}

# Whether `x` is an environment whose `.ptr` is a promise (delayedAssign(),
# or an unserialized environment), for builds for R 4.5 only. Rust's
# lookup of `.ptr` (`frame_value()` in src/rust/src/r/ffi.rs) refuses a
# promise without forcing it on R >= 4.6 (R_GetBindingType) and below 4.5
# (where the lookup returns the promise itself); R 4.5's lookup,
# R_getVarEx, would run it, so there the handle is refused here first.
# substitute() gives a promise's expression, a value as it is; active
# bindings are refused by Rust without being called. `.promise_lookup`, which
# callers test first, is fixed when the package is installed, by the R that
# configure asked.
.promise_lookup <- getRversion() >= "4.5.0" && getRversion() < "4.6.0"
.ptr_unforced <- function(x) {
  is.environment(x) && exists(".ptr", envir = x, inherits = FALSE) &&
    !bindingIsActive(".ptr", x) && typeof(substitute(.ptr, x)) != "externalptr"
}

# Replaces savvy's generated helper of the same name (R/000-wrappers.R, which
# is collated first so that such helpers can be overridden): every call into
# Rust that takes a heap handle checks it first, so a forged or restored
# handle is an `fmalloc_invalid` error instead of a crash.
.savvy_extract_ptr <- function(e, class) {
  if (is.null(e)) {
    return(NULL)
  }
  if (identical(class, "Rfmalloc::FmallocHeap")) {
    .check_heap(e, call = NULL)
  } else if (!inherits(e, class)) {
    .invalid(sprintf("expected %s, got <%s>", class, class(e)[[1L]]), NULL)
  }
  get(".ptr", envir = e, inherits = FALSE)
}
