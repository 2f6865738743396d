# Named objects: save an R object under a name, get it back zero-copy.
#
# An object is stored as
#   * one heap block per *leaf* (an atomic vector of a supported type and
#     length > 0; also attribute values of at least .fm_attr_leaf_min
#     elements, such as the names of a long vector), and
#   * a *meta* blob in the catalog entry: meta v2, our own encoding (see
#     src/rust/src/format/meta.rs and inst/FORMAT.md): a summary for
#     fmalloc_ls() and a pre-order stream of nodes (lists, leaves by block
#     index, small atomic values inline, NULL, S4 objects) with their
#     attributes.
#
# R only checks the object and describes it as a flat table of nodes
# (.fm_decompose()); Rust encodes the meta, and decodes it and builds the
# object (no byte of a meta ever reaches unserialize(): the heap file is
# untrusted). A meta of version 1 (written with serialize() by older
# versions) is refused as fmalloc_corrupt, never decoded.

.fm_leaf_types <- c("logical", "integer", "double", "complex", "raw", "character")
# Node kinds of meta v2 (format::meta::KIND_*).
.fm_kind <- c(null = 0L, list = 1L, block = 2L, logical = 3L, integer = 4L, double = 5L,
              complex = 6L, raw = 7L, character = 8L, S4 = 9L)
# Deepest nesting of lists and attribute values (format::meta::MAX_DEPTH).
.fm_max_depth <- 1000L
# Attribute values longer than this become leaves of their own (zero-copy
# names / row names of big vectors); shorter ones stay in the meta.
.fm_attr_leaf_min <- 4096L

# ---------------------------------------------------------------------------
# Decomposition: object -> flat node table + leaves (validating everything)
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

# Describes `x` as a table of nodes in stream (pre-order) order -- a node,
# then its attribute values (each with its name), then its elements -- and
# collects its leaves. Signals fmalloc_unsupported (naming the part, e.g.
# "x$a$f") before anything is written; the caller only writes after this
# returned. Columns (see src/rust/src/r/named_meta.rs): kind, s4, nattr,
# aname (attribute name or NA), len (list length), data (inline vector or
# leaf index); plus the summary.
.fm_decompose <- function(x, label = "x", call = NULL) {
  acc <- new.env(parent = emptyenv())
  acc$leaves <- vector("list", 16L)
  acc$nleaves <- 0L
  cap <- 64L
  acc$kind <- integer(cap)
  acc$s4 <- logical(cap)
  acc$nattr <- integer(cap)
  acc$aname <- rep(NA_character_, cap)
  acc$len <- numeric(cap)
  acc$data <- vector("list", cap)
  acc$n <- 0L

  emit <- function(kind, s4, nattr, aname, len = 0, data = NULL) {
    i <- acc$n + 1L
    if (i > length(acc$kind)) {
      m <- 2L * i
      length(acc$kind) <- m
      length(acc$s4) <- m
      length(acc$nattr) <- m
      length(acc$aname) <- m
      length(acc$len) <- m
      length(acc$data) <- m
    }
    acc$kind[i] <- kind
    acc$s4[i] <- s4
    acc$nattr[i] <- nattr
    acc$aname[i] <- aname
    acc$len[i] <- len
    if (!is.null(data)) acc$data[i] <- list(data)
    acc$n <- i
    invisible(NULL)
  }

  add_leaf <- function(v) {
    i <- acc$nleaves + 1L
    if (i > length(acc$leaves)) length(acc$leaves) <- 2L * i
    # The vector itself, attributes and all: Rust reads only its data, and
    # stripping the attributes here would make R copy the data.
    acc$leaves[i] <- list(v)
    acc$nleaves <- i
    i
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

  check_depth <- function(path, depth) {
    if (depth > .fm_max_depth) {
      .fm_unsupported(path, sprintf("nested deeper than %d levels", .fm_max_depth), call)
    }
  }

  attrs_of <- function(node) {
    a <- attributes(node)
    if (!is.null(a[["row.names"]])) {
      # The internal (compact) form: c(NA, -n) instead of 1:n.
      a["row.names"] <- list(.row_names_info(node, 0L))
    }
    a
  }

  # Attribute values of a node. With `leaves`, large atomic values become
  # leaves of their own; everything else is plain data kept in the meta.
  walk_attrs <- function(a, path, depth, leaves) {
    for (k in seq_along(a)) {
      nm <- enc2utf8(names(a)[[k]])
      val <- a[[k]]
      p <- sprintf("attr(%s, \"%s\")", path, nm)
      if (leaves && is.atomic(val) && !is.null(val) && !isS4(val) && is.null(attributes(val)) &&
        typeof(val) %in% .fm_leaf_types && length(val) >= .fm_attr_leaf_min) {
        emit(.fm_kind[["block"]], FALSE, 0L, nm, data = add_leaf(val))
      } else {
        walk_value(val, p, nm, depth + 1L)
      }
    }
  }

  # Plain data kept in the meta by value (attribute values): atomic vectors,
  # lists of them, NULL.
  walk_value <- function(v, path, aname, depth) {
    check_depth(path, depth)
    if (is.null(v)) {
      return(emit(.fm_kind[["null"]], FALSE, 0L, aname))
    }
    type <- typeof(v)
    if (is.atomic(v) && type %in% .fm_leaf_types && !isS4(v)) {
      a <- attributes(v)
      emit(.fm_kind[[type]], FALSE, length(a), aname, data = v)
      return(walk_attrs(a, path, depth, FALSE))
    }
    if (is.list(v) && !isS4(v) && type == "list") {
      a <- attributes(v)
      emit(.fm_kind[["list"]], FALSE, length(a), aname, len = length(v))
      walk_attrs(a, path, depth, FALSE)
      nms <- names(v)
      for (k in seq_along(v)) walk_value(.subset2(v, k), child_path(path, nms, k), NA_character_, depth + 1L)
      return(invisible(NULL))
    }
    .fm_unsupported(path, .fm_describe(v), call)
  }

  walk <- function(node, path, depth) {
    check_depth(path, depth)
    if (is.null(node)) {
      return(emit(.fm_kind[["null"]], FALSE, 0L, NA_character_))
    }
    type <- typeof(node)
    if (type %in% .fm_leaf_types) {
      a <- attrs_of(node)
      if (length(node) == 0L) {
        emit(.fm_kind[[type]], isS4(node), length(a), NA_character_, data = node) # no data: by value
      } else {
        emit(.fm_kind[["block"]], isS4(node), length(a), NA_character_, data = add_leaf(node))
      }
      return(walk_attrs(a, path, depth, TRUE))
    }
    if (type == "list") {
      a <- attrs_of(node)
      s4 <- isS4(node)
      node <- unclass(node) # no length()/names() methods (POSIXlt); shallow
      emit(.fm_kind[["list"]], s4, length(a), NA_character_, len = length(node))
      walk_attrs(a, path, depth, TRUE)
      nms <- names(node)
      for (k in seq_along(node)) {
        walk(.subset2(node, k), child_path(path, nms, k), depth + 1L)
      }
      return(invisible(NULL))
    }
    if (type == "S4") {
      # An S4 object without a data part: its slots are attributes.
      a <- attributes(node)
      emit(.fm_kind[["S4"]], TRUE, length(a), NA_character_)
      return(walk_attrs(a, path, depth, FALSE))
    }
    .fm_unsupported(path, .fm_describe(node), call)
  }

  walk(x, label, 1L)
  n <- seq_len(acc$n)
  list(
    desc = list(
      summary = .fm_summary(x),
      kind = acc$kind[n], s4 = acc$s4[n], nattr = acc$nattr[n],
      aname = acc$aname[n], len = acc$len[n], data = acc$data[n]
    ),
    leaves = acc$leaves[seq_len(acc$nleaves)]
  )
}

.fm_summary <- function(x) {
  d <- dim(x)
  list(
    type = if (is.data.frame(x)) "list" else typeof(x),
    class = enc2utf8(paste(class(x), collapse = "/")),
    length = as.numeric(if (is.data.frame(x)) nrow(x) else length(x)),
    dim = if (is.null(d)) NA_character_ else paste(d, collapse = "x")
  )
}

# ---------------------------------------------------------------------------
# Reassembly (in Rust: see src/rust/src/r/named_assemble.rs for why)
# ---------------------------------------------------------------------------

# The heap-backed object `name` of `heap`, decoded and built in Rust.
#
# Care is needed for in-place writes to reach the file: R copies a vector at
# the first `x[i] <- v` when it looks shared (reference count > 1). A value
# passed through a promise (such as the `expr` of .rfm()) or bound in a frame
# that R cannot release on return (one that created a closure or handler)
# keeps an extra count. So the Rust call is not wrapped in .rfm() -- it
# returns failures as a value -- and the result is returned directly by
# every function on the way back to the user (fmalloc_get(), fmalloc_save()).
.fm_assemble <- function(heap, name, call) {
  obj <- fmalloc_named_get(heap, name)
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
  .rfm(fmalloc_named_save(heap, name, parts$desc, parts$leaves, overwrite), call)
  rm(parts)
  # Returned directly: see .fm_assemble().
  invisible(.fm_assemble(heap, name, call))
}

# create_fmalloc_vector(name = ): a new vector saved under `name` without a
# copy; returns the heap-backed vector fmalloc_get(name) would return.
.fmalloc_create_named <- function(type, length, heap, method, init, name, call) {
  .check_string(name, "name", call)
  v <- create_fmalloc_vector(type, length, heap = heap, method = method, init = init)
  heap <- .fm_heap(heap, call)
  parts <- .fm_decompose(v, call = call)
  .rfm(fmalloc_named_save(heap, name, parts$desc, parts$leaves, FALSE), call)
  rm(parts)
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
  # Returned directly: see .fm_assemble().
  .fm_assemble(heap, name, call)
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
  # Integer, as length() gives, when every length fits (doubles such as
  # 1e6 would print as "1e+06" in the data frame); double otherwise.
  lengths <- cat$length
  if (all(is.na(lengths) | lengths <= .Machine$integer.max)) lengths <- as.integer(lengths)
  data.frame(
    name = cat$name,
    type = cat$type,
    class = cat$class,
    length = lengths,
    dim = cat$dim,
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
