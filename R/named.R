# Named objects: save an R object under a name, get it back zero-copy.
#
# An object is stored as
#   * one heap block per *leaf* (an atomic vector of a supported type), and
#   * a *meta* blob in the catalog entry:
#
#     offset  size  field
#     0       4     magic "RFMN"
#     4       4     format version (little-endian int32, currently 1)
#     8       4     n = length of the summary (little-endian int32)
#     12      n     summary: serialize(list(type, class, length, dim))
#     12 + n  ...   body:    serialize(list(skeleton, leaves))
#
# The *skeleton* is the object with every leaf replaced by a placeholder: the
# symbol `.fmalloc_leaf_<i>`. Symbols cannot be stored by users (they are
# refused), so a symbol in a skeleton is always a placeholder. `leaves[[i]]`
# records leaf i's type, its attributes (which may themselves hold
# placeholders for large attribute values such as names) and its S4 bit.
# Leaf i lives in the i-th block of the catalog entry. Zero-length leaves have
# no block: they stay in the skeleton by value.
#
# The meta blob is read from an untrusted file: every field is checked before
# use and any failure is an `fmalloc_corrupt` error.

.fm_meta_magic <- as.raw(c(0x52, 0x46, 0x4d, 0x4e)) # "RFMN"
.fm_meta_version <- 1L
.fm_leaf_types <- c("logical", "integer", "double", "complex", "raw", "character")
# Attribute values longer than this become leaves of their own (zero-copy
# names / row names of big vectors); shorter ones stay in the meta.
.fm_attr_leaf_min <- 4096L

# ---------------------------------------------------------------------------
# Decomposition: object -> skeleton + leaves (validating everything first)
# ---------------------------------------------------------------------------

.fm_unsupported <- function(path, what, call = NULL) {
  .fmalloc_abort(
    sprintf(
      "Rfmalloc: cannot store %s: it is %s (only atomic vectors, lists and data frames of them can be named); nothing was written",
      path, what
    ),
    "fmalloc_unsupported", call
  )
}

.fm_describe <- function(x) {
  switch(typeof(x),
    closure = , builtin = , special = "a function",
    environment = "an environment",
    externalptr = "an external pointer",
    symbol = "a symbol",
    language = "a call (language object)",
    pairlist = "a pairlist",
    promise = "a promise",
    bytecode = "byte code",
    weakref = "a weak reference",
    S4 = "an S4 object with slots that cannot be stored",
    paste("an object of type", typeof(x))
  )
}

# Builds the skeleton of `x` and collects its leaves. Signals
# fmalloc_unsupported (naming the part, e.g. "x$a$f") before anything is
# written; the caller only writes after this returned.
.fm_decompose <- function(x, label = "x", call = NULL) {
  acc <- new.env(parent = emptyenv())
  acc$leaves <- vector("list", 16L)
  acc$info <- vector("list", 16L)
  acc$n <- 0L

  add_leaf <- function(v, info) {
    i <- acc$n + 1L
    if (i > length(acc$leaves)) {
      length(acc$leaves) <- 2L * i
      length(acc$info) <- 2L * i
    }
    # The vector itself, attributes and all: Rust reads only its data, and
    # stripping the attributes here would make R copy the data.
    acc$leaves[i] <- list(v)
    acc$info[i] <- list(info)
    acc$n <- i
    as.symbol(paste0(".fmalloc_leaf_", i))
  }

  child_path <- function(path, nms, k) {
    nm <- if (!is.null(nms)) nms[[k]] else ""
    if (!is.na(nm) && nzchar(nm) && make.names(nm) == nm) {
      paste0(path, "$", nm)
    } else if (!is.na(nm) && nzchar(nm)) {
      paste0(path, "$`", nm, "`")
    } else {
      paste0(path, "[[", k, "]]")
    }
  }

  # Attributes of a node. Large atomic values become leaves of their own;
  # everything else must be plain data (walked like the object itself).
  walk_attrs <- function(node, path) {
    a <- attributes(node)
    if (is.null(a)) {
      return(NULL)
    }
    if (!is.null(a[["row.names"]])) {
      # The internal (compact) form: c(NA, -n) instead of 1:n.
      a["row.names"] <- list(.row_names_info(node, 0L))
    }
    for (k in seq_along(a)) {
      nm <- names(a)[[k]]
      val <- a[[k]]
      p <- sprintf("attr(%s, \"%s\")", path, nm)
      if (is.atomic(val) && !is.null(val) && !isS4(val) && is.null(attributes(val)) &&
        typeof(val) %in% .fm_leaf_types && length(val) >= .fm_attr_leaf_min) {
        a[k] <- list(add_leaf(val, list(type = typeof(val), attrs = NULL, s4 = FALSE)))
      } else {
        a[k] <- list(walk_value(val, p))
      }
    }
    a
  }

  # Plain data kept in the meta by value (attribute values): atomic vectors,
  # lists of them, NULL.
  walk_value <- function(v, path) {
    if (is.null(v)) {
      return(NULL)
    }
    if (is.atomic(v) && typeof(v) %in% .fm_leaf_types && !isS4(v)) {
      check_attrs_plain(v, path)
      return(v)
    }
    if (is.list(v) && !isS4(v) && typeof(v) == "list") {
      check_attrs_plain(v, path)
      for (k in seq_along(v)) walk_value(v[[k]], child_path(path, names(v), k))
      return(v)
    }
    .fm_unsupported(path, .fm_describe(v), call)
  }

  check_attrs_plain <- function(v, path) {
    a <- attributes(v)
    for (k in seq_along(a)) {
      walk_value(a[[k]], sprintf("attr(%s, \"%s\")", path, names(a)[[k]]))
    }
  }

  walk <- function(node, path) {
    if (is.null(node)) {
      return(NULL)
    }
    type <- typeof(node)
    if (type %in% .fm_leaf_types) {
      attrs <- walk_attrs(node, path)
      if (length(node) == 0L) {
        return(node) # no data: kept by value
      }
      return(add_leaf(node, list(type = type, attrs = attrs, s4 = isS4(node))))
    }
    if (type == "list") {
      attrs <- walk_attrs(node, path)
      s4 <- isS4(node)
      node <- unclass(node) # no length()/names() methods (POSIXlt); shallow
      nms <- names(node)
      out <- vector("list", length(node))
      for (k in seq_along(node)) {
        el <- walk(.subset2(node, k), child_path(path, nms, k))
        if (!is.null(el)) out[[k]] <- el
      }
      attributes(out) <- attrs
      if (s4) out <- asS4(out)
      return(out)
    }
    if (type == "S4") {
      # An S4 object without a data part: its slots are attributes.
      check_attrs_plain(node, path)
      return(node)
    }
    .fm_unsupported(path, .fm_describe(node), call)
  }

  skeleton <- walk(x, label)
  n <- acc$n
  list(
    skeleton = skeleton,
    leaves = acc$leaves[seq_len(n)],
    info = acc$info[seq_len(n)]
  )
}

# ---------------------------------------------------------------------------
# Meta blob
# ---------------------------------------------------------------------------

.fm_int32_le <- function(i) writeBin(as.integer(i), raw(), size = 4L, endian = "little")

.fm_summary <- function(x) {
  d <- dim(x)
  list(
    type = if (is.data.frame(x)) "list" else typeof(x),
    class = paste(class(x), collapse = "/"),
    length = as.numeric(if (is.data.frame(x)) nrow(x) else length(x)),
    dim = if (is.null(d)) NA_character_ else paste(d, collapse = "x")
  )
}

.fm_meta_encode <- function(x, parts) {
  summary <- serialize(.fm_summary(x), NULL, xdr = FALSE)
  body <- serialize(list(skeleton = parts$skeleton, leaves = parts$info), NULL, xdr = FALSE)
  c(.fm_meta_magic, .fm_int32_le(.fm_meta_version), .fm_int32_le(length(summary)), summary, body)
}

.fm_corrupt <- function(name, what) {
  .fmalloc_abort(
    sprintf("Rfmalloc: the stored object '%s' is damaged (%s); nothing was changed", name, what),
    "fmalloc_corrupt", NULL
  )
}

# Returns the summary n and checks magic and version.
.fm_meta_header <- function(meta, name) {
  if (!is.raw(meta) || length(meta) < 12L || !identical(meta[1:4], .fm_meta_magic)) {
    .fm_corrupt(name, "bad meta header")
  }
  version <- readBin(meta[5:8], "integer", size = 4L, endian = "little")
  if (!identical(version, .fm_meta_version)) {
    .fm_corrupt(name, sprintf("meta format version %d is not supported by this Rfmalloc", version))
  }
  n <- readBin(meta[9:12], "integer", size = 4L, endian = "little")
  if (is.na(n) || n < 0L || n > length(meta) - 12L) {
    .fm_corrupt(name, "bad summary length")
  }
  n
}

.fm_unserialize <- function(bytes, name, what) {
  tryCatch(unserialize(bytes), error = function(e) .fm_corrupt(name, paste("cannot read the", what)))
}

.fm_meta_summary <- function(meta, name) {
  n <- .fm_meta_header(meta, name)
  s <- .fm_unserialize(meta[12L + seq_len(n)], name, "summary")
  ok <- is.list(s) && all(c("type", "class", "length", "dim") %in% names(s)) &&
    all(vapply(s[c("type", "class", "dim")], function(v) is.character(v) && length(v) == 1L, NA)) &&
    is.numeric(s$length) && length(s$length) == 1L
  if (!ok) .fm_corrupt(name, "bad summary")
  s
}

.fm_meta_body <- function(meta, name) {
  n <- .fm_meta_header(meta, name)
  body <- .fm_unserialize(meta[-seq_len(12L + n)], name, "structure")
  if (!is.list(body) || !identical(names(body), c("skeleton", "leaves")) || !is.list(body$leaves)) {
    .fm_corrupt(name, "bad structure")
  }
  for (info in body$leaves) {
    ok <- is.list(info) && is.character(info$type) && length(info$type) == 1L &&
      info$type %in% .fm_leaf_types && (is.null(info$attrs) || is.list(info$attrs)) &&
      is.logical(info$s4) && length(info$s4) == 1L && !is.na(info$s4)
    if (!ok) .fm_corrupt(name, "bad leaf description")
  }
  body
}

# ---------------------------------------------------------------------------
# Reassembly (in Rust: see src/rust/src/r/named_assemble.rs for why)
# ---------------------------------------------------------------------------

# The heap-backed object `name` of `heap`, built around `body` (the decoded
# meta).
#
# Care is needed for in-place writes to reach the file: R copies a vector at
# the first `x[i] <- v` when it looks shared (reference count > 1). A value
# passed through a promise (such as the `expr` of .rfm()) or bound in a frame
# that R cannot release on return (one that created a closure or handler)
# keeps an extra count. So the Rust call is not wrapped in .rfm() -- it
# returns failures as a value -- and the result is returned directly by
# every function on the way back to the user (fmalloc_get(), fmalloc_save()).
.fm_assemble <- function(heap, name, body, call) {
  info <- body$leaves
  obj <- fmalloc_named_assemble(
    heap, name, body$skeleton,
    lapply(info, .subset2, "attrs"),
    vapply(info, .subset2, NA, "s4"),
    vapply(info, .subset2, "", "type")
  )
  if (inherits(obj, "fmalloc_failure")) {
    .rfm(stop(unclass(obj), call. = FALSE), call)
  }
  obj
}

# ---------------------------------------------------------------------------
# User API
# ---------------------------------------------------------------------------

# The heap argument of the named-object functions: a handle, or NULL for the
# session default set by init_fmalloc().
.fm_heap <- function(heap, call) {
  if (is.null(heap)) {
    heap <- .fmalloc_default_heap(call)
  }
  .check_heap(heap, call = call)
  heap
}

#' Save, get and manage named objects in a heap
#'
#' `fmalloc_save()` stores an R object in a heap under a name;
#' `fmalloc_get()` returns it, in this or any later R session, without
#' reading or copying its data: every vector of the result is an ALTREP
#' vector over the heap file, so getting an 8 GB vector takes milliseconds.
#'
#' What can be saved: atomic vectors (logical, integer, double, complex, raw,
#' character) with any attributes (names, dim, dimnames, class, levels,
#' tzone, units, comment, ...) -- so matrices, arrays, factors, `Date`,
#' `POSIXct` and `difftime` objects -- data frames and lists of these, nested
#' to any depth. Other objects (environments, functions, external pointers,
#' calls, ...) are refused with an error of class `fmalloc_unsupported` that
#' names the part that failed, and nothing is written.
#'
#' Saving costs no copy for vectors whose data already live in the heap
#' (created by [create_fmalloc_vector()], either method): the saved object
#' and `x` then share their data. Modify it in place through the value
#' `fmalloc_save()` returns (or [fmalloc_get()]): passing `x` to a function
#' made it shared, so R would copy `x` before modifying it. A vector that
#' already belongs to another named object is copied, as are vectors outside
#' the heap (once).
#'
#' Vectors got from a heap behave like ordinary vectors. In-place
#' modification (`x[i] <- v` on an unshared vector) writes into the file, and
#' the change is seen by the next `fmalloc_get()`, also in another session.
#' Modifying a shared vector, or one from a heap opened with
#' `readonly = TRUE`, gives an ordinary copy as R always does; the file is
#' not changed.
#'
#' `fmalloc_rm()` removes a name and frees the space of its data once no
#' vector of this session uses them any more (vectors still in use stay
#' valid). `fmalloc_rename()` renames atomically. Names are non-empty
#' strings. Call [fmalloc_sync()] (or close the heap) to make changes durable
#' against a system crash; a crash of R alone loses nothing.
#'
#' @param x An object to save.
#' @param name The object's name in the heap: a single non-empty string.
#' @param heap A heap handle from [fmalloc_open()], or `NULL` for the
#'   session's default heap (see [init_fmalloc()]).
#' @param overwrite Replace an existing object of that name? If `FALSE`
#'   (the default) an existing name gives an error of class `fmalloc_exists`.
#' @param from,to Old and new name.
#'
#' @returns `fmalloc_save()` returns (invisibly) the heap-backed version of
#'   `x`, what `fmalloc_get(name)` would return. `fmalloc_get()` returns the
#'   object. `fmalloc_exists()` returns `TRUE` or `FALSE`. `fmalloc_ls()`
#'   returns a data frame with one row per object and columns `name`, `type`
#'   (of the top-level object: `"list"` for data frames and lists), `class`
#'   (classes joined by `/`), `length` (rows for data frames; integer, or
#'   double when a length exceeds `.Machine$integer.max`), `dim`
#'   (e.g. `"3x4"`, or `NA`), `bytes` (of the data in the heap), `created` and
#'   `modified` (`POSIXct`). `fmalloc_rm()` and `fmalloc_rename()` return
#'   `NULL` invisibly.
#'
#' @seealso [fmalloc_open()], [fmalloc_ref()] for sending named vectors to
#'   other processes by reference.
#' @examples
#' path <- tempfile(fileext = ".bin")
#' heap <- fmalloc_open(path, size_gb = 1)
#'
#' df <- data.frame(id = 1:3, price = c(9.5, 12, 7.25), item = c("a", "b", "c"))
#' fmalloc_save(df, "prices", heap)
#' fmalloc_ls(heap)
#'
#' # Later, in this or another R session:
#' prices <- fmalloc_get("prices", heap)
#' identical(prices, df)
#' prices$price[2] <- 11.5 # written into the file
#' fmalloc_get("prices", heap)$price
#'
#' fmalloc_rename("prices", "prices_2024", heap)
#' fmalloc_exists("prices", heap)
#' fmalloc_rm("prices_2024", heap)
#'
#' # Functions, environments, ... cannot be stored:
#' tryCatch(
#'   fmalloc_save(list(a = 1, f = mean), "bad", heap),
#'   fmalloc_unsupported = conditionMessage
#' )
#' rm(prices)
#' fmalloc_close(heap)
#' unlink(path)
#' @name fmalloc_save
NULL

#' @rdname fmalloc_save
#' @export
fmalloc_save <- function(x, name, heap = NULL, overwrite = FALSE) {
  call <- sys.call()
  .check_string(name, "name")
  .check_flag(overwrite, "overwrite")
  heap <- .fm_heap(heap, call)
  label <- deparse1(substitute(x))
  if (nchar(label) > 40L) label <- "x"
  # Validate the whole object before anything is written.
  parts <- .fm_decompose(x, label, call)
  meta <- .fm_meta_encode(x, parts)
  .rfm(fmalloc_named_save(heap, name, meta, parts$leaves, overwrite), call)
  # Returned directly: see .fm_assemble().
  invisible(.fm_assemble(heap, name, list(skeleton = parts$skeleton, leaves = parts$info), call))
}

# create_fmalloc_vector(name = ): a new vector saved under `name` without a
# copy; returns the heap-backed vector fmalloc_get(name) would return.
.fmalloc_create_named <- function(type, length, heap, method, init, name, call) {
  .check_string(name, "name", call)
  v <- create_fmalloc_vector(type, length, heap = heap, method = method, init = init)
  heap <- .fm_heap(heap, call)
  .rfm(fmalloc_named_save(heap, name, .fm_meta_encode(v, .fm_decompose(v)), list(v), FALSE), call)
  rm(v)
  # Returned directly: see .fm_assemble().
  fmalloc_get(name, heap)
}

#' @rdname fmalloc_save
#' @export
fmalloc_get <- function(name, heap = NULL) {
  call <- sys.call()
  .check_string(name, "name")
  heap <- .fm_heap(heap, call)
  meta <- .rfm(fmalloc_named_meta(heap, name), call)
  # Returned directly: see .fm_assemble().
  .fm_assemble(heap, name, .fm_meta_body(meta, name), call)
}

#' @rdname fmalloc_save
#' @export
fmalloc_exists <- function(name, heap = NULL) {
  call <- sys.call()
  .check_string(name, "name")
  heap <- .fm_heap(heap, call)
  .rfm(fmalloc_named_exists(heap, name), call)
}

#' @rdname fmalloc_save
#' @export
fmalloc_ls <- function(heap = NULL) {
  call <- sys.call()
  heap <- .fm_heap(heap, call)
  cat <- .rfm(fmalloc_named_list(heap), call)
  # A damaged entry still gets its row (with NA fields): fmalloc_get()
  # reports what is wrong with it.
  na <- list(type = NA_character_, class = NA_character_, length = NA_real_, dim = NA_character_)
  summaries <- Map(function(meta, name) {
    tryCatch(.fm_meta_summary(meta, name), fmalloc_corrupt = function(e) na)
  }, cat$summary, cat$name)
  field <- function(f, type) vapply(summaries, function(s) s[[f]], type, USE.NAMES = FALSE)
  # Integer, as length() gives, when every length fits (doubles such as
  # 1e6 would print as "1e+06" in the data frame); double otherwise.
  lengths <- field("length", 0)
  if (all(is.na(lengths) | lengths <= .Machine$integer.max)) lengths <- as.integer(lengths)
  data.frame(
    name = cat$name,
    type = field("type", ""),
    class = field("class", ""),
    length = lengths,
    dim = field("dim", ""),
    bytes = cat$bytes,
    created = .POSIXct(cat$created),
    modified = .POSIXct(cat$modified),
    stringsAsFactors = FALSE
  )
}

#' @rdname fmalloc_save
#' @export
fmalloc_rm <- function(name, heap = NULL) {
  call <- sys.call()
  .check_string(name, "name")
  heap <- .fm_heap(heap, call)
  .rfm(fmalloc_named_remove(heap, name), call)
  invisible(NULL)
}

#' @rdname fmalloc_save
#' @export
fmalloc_rename <- function(from, to, heap = NULL, overwrite = FALSE) {
  call <- sys.call()
  .check_string(from, "from")
  .check_string(to, "to")
  .check_flag(overwrite, "overwrite")
  heap <- .fm_heap(heap, call)
  .rfm(fmalloc_named_rename(heap, from, to, overwrite), call)
  invisible(NULL)
}
