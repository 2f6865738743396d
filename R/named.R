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

# Refuses a value whose class names a package (an S4 class) that is not
# loaded, before anything dispatches on it: R's length() of an S4 object
# looks up its class, which loads (and attaches) the package. The one check
# of a save (every part and attribute value passes here); a read of a file
# has its own (r::named::assemble::check_packages).
.fm_check_class_package <- function(v, path, call) {
  pkg <- attr(attr(v, "class", exact = TRUE), "package", exact = TRUE)
  if (is.character(pkg) && length(pkg) == 1L && !is.na(pkg) &&
      pkg != ".GlobalEnv" && !isNamespaceLoaded(pkg)) {
    .fmalloc_abort(sprintf(paste(
      "Rfmalloc: cannot store %s: its class is of package '%s', which is not loaded;",
      "load it (library(%s)) and try again; nothing was written"
    ), path, pkg, pkg), "fmalloc_unsupported", call)
  }
}

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
  if (!is.null(x) && is.atomic(x) && is.null(attributes(x))) {
    return(.fm_decompose_plain(x))
  }
  .fm_decompose_walk(x, label, call)
}

# .fm_decompose() of an atomic vector without attributes (the common case
# of saving many small objects): one node, the same table
# .fm_decompose_walk() makes for it, without the walk (`label` is not
# needed: such a vector is never refused).
.fm_decompose_plain <- function(x) {
  n <- length(x)
  list(
    desc = list(
      summary = list(type = typeof(x), class = class(x), length = as.numeric(n),
                     dim = NA_character_),
      kind = if (n > 0L) .fm_kind[["block"]] else .fm_kind[[typeof(x)]],
      s4 = isS4(x), nattr = 0L, aname = NA_character_, len = 0,
      data = list(if (n > 0L) 1L else x)
    ),
    leaves = if (n > 0L) list(x) else list()
  )
}

.fm_decompose_walk <- function(x, label = "x", call = NULL) {
  # Everything accumulates in local vectors of this frame, modified in
  # place (grown by doubling): no environment or closure per node, which
  # would copy them at every step.
  child_paths <- function(path, nms, n) {
    k <- seq_len(n)
    if (is.null(nms)) {
      return(paste0(path, "[[", k, "]]"))
    }
    named <- !is.na(nms) & nzchar(nms)
    # make.names() refuses names marked as bytes (not syntactic anyway).
    syntactic <- named & Encoding(nms) != "bytes"
    syntactic[syntactic] <- make.names(nms[syntactic]) == nms[syntactic]
    ifelse(syntactic, paste0(path, "$", nms),
      ifelse(named, paste0(path, "$`", nms, "`"), paste0(path, "[[", k, "]]"))
    )
  }

  attrs_of <- function(node) {
    a <- attributes(node)
    # data.table's pointer to itself (an external pointer, meaningful in
    # this session only): data.table remakes it (see .fm_data_table()).
    a[[".internal.selfref"]] <- NULL
    if (!is.null(a[["row.names"]])) {
      # The internal (compact) form: c(NA, -n) instead of 1:n.
      a["row.names"] <- list(.row_names_info(node, 0L))
    }
    a
  }

  # A work stack instead of recursion (R's own recursion would exhaust the
  # C stack long before .fm_max_depth). Items are popped in stream order:
  # a node's attribute values, then its elements, are pushed in reverse.
  # Modes: WALK an object part (vectors of length > 0 become leaves), PLAIN
  # a value kept in the meta (attribute values: atomic vectors, lists of
  # them, NULL), ALEAF a large attribute value stored as a leaf.
  WALK <- 0L
  PLAIN <- 1L
  ALEAF <- 2L
  leaves <- vector("list", 16L)
  n_leaves <- 0L
  o_kind <- integer(64L)
  o_s4 <- logical(64L)
  o_nattr <- integer(64L)
  o_aname <- rep(NA_character_, 64L)
  o_len <- numeric(64L)
  o_data <- vector("list", 64L)
  n <- 0L
  st_v <- list(x)
  st_path <- label
  st_aname <- NA_character_
  st_depth <- 1L
  st_mode <- WALK
  n_st <- 1L
  while (n_st > 0L) {
    v <- st_v[[n_st]]
    path <- st_path[[n_st]]
    aname <- st_aname[[n_st]]
    depth <- st_depth[[n_st]]
    mode <- st_mode[[n_st]]
    st_v[n_st] <- list(NULL)
    n_st <- n_st - 1L
    if (depth > .fm_max_depth) {
      .fm_unsupported(path, sprintf("nested deeper than %d levels", .fm_max_depth), call)
    }
    a <- NULL
    kids <- NULL
    leaf <- NULL
    e_s4 <- FALSE
    e_len <- 0
    e_data <- NULL
    type <- typeof(v)
    .fm_check_class_package(v, path, call)
    if (mode == ALEAF) {
      e_kind <- .fm_kind[["block"]]
      leaf <- v
    } else if (is.null(v)) {
      e_kind <- .fm_kind[["null"]]
    } else if (type %in% .fm_leaf_types && (mode == WALK || !isS4(v))) {
      a <- if (mode == WALK) attrs_of(v) else attributes(v)
      e_s4 <- isS4(v)
      if (mode == PLAIN || length(v) == 0L) {
        e_kind <- .fm_kind[[type]] # by value
        e_data <- v
      } else {
        e_kind <- .fm_kind[["block"]]
        leaf <- v
      }
    } else if (type == "list" && (mode == WALK || !isS4(v))) {
      a <- if (mode == WALK) attrs_of(v) else attributes(v)
      e_s4 <- isS4(v)
      kids <- unclass(v) # no length()/names() methods (POSIXlt); shallow
      kid_names <- names(kids)
      e_kind <- .fm_kind[["list"]]
      e_len <- length(kids)
    } else if (type == "S4" && mode == WALK) {
      # An S4 object without a data part: its slots are attributes.
      a <- attributes(v)
      e_kind <- .fm_kind[["S4"]]
      e_s4 <- TRUE
      mode <- PLAIN
    } else if (isS4(v) && mode == PLAIN) {
      .fm_unsupported(path, paste(
        "an S4 object in the value of an attribute or slot, which can hold",
        "only vectors and lists of them (an S4 object can be stored on its own",
        "or in a list, not inside an attribute)"
      ), call)
    } else {
      .fm_unsupported(path, .fm_describe(v), call)
    }
    if (!is.null(leaf)) {
      # The vector itself, attributes and all: Rust reads only its data,
      # and stripping the attributes here would make R copy the data.
      n_leaves <- n_leaves + 1L
      if (n_leaves > length(leaves)) length(leaves) <- 2L * n_leaves
      leaves[n_leaves] <- list(leaf)
      e_data <- n_leaves
    }
    n <- n + 1L
    if (n > length(o_kind)) {
      grow <- 2L * n
      length(o_kind) <- grow
      length(o_s4) <- grow
      length(o_nattr) <- grow
      length(o_aname) <- grow
      length(o_len) <- grow
      length(o_data) <- grow
    }
    o_kind[n] <- e_kind
    o_s4[n] <- e_s4
    o_nattr[n] <- length(a)
    o_aname[n] <- aname
    o_len[n] <- e_len
    if (!is.null(e_data)) o_data[n] <- list(e_data)
    n_a <- length(a)
    n_k <- length(kids)
    if (n_a + n_k == 0L) next
    m <- n_st + n_a + n_k
    if (m > length(st_v)) {
      grow <- 2L * m
      length(st_v) <- grow
      length(st_path) <- grow
      length(st_aname) <- grow
      length(st_depth) <- grow
      length(st_mode) <- grow
    }
    if (n_k > 0L) {
      at <- n_st + rev(seq_len(n_k))
      st_v[at] <- kids
      st_path[at] <- child_paths(path, kid_names, n_k)
      st_aname[at] <- NA_character_
      st_depth[at] <- depth + 1L
      st_mode[at] <- mode
      n_st <- n_st + n_k
    }
    if (n_a > 0L) {
      at <- n_st + rev(seq_len(n_a))
      nms <- enc2utf8(names(a))
      big <- if (mode == WALK) {
        vapply(a, function(val) {
          is.atomic(val) && !is.null(val) && !isS4(val) && is.null(attributes(val)) &&
            typeof(val) %in% .fm_leaf_types && length(val) >= .fm_attr_leaf_min
        }, NA, USE.NAMES = FALSE)
      } else {
        rep(FALSE, n_a)
      }
      st_v[at] <- unname(a)
      st_path[at] <- sprintf("attr(%s, \"%s\")", path, nms)
      st_aname[at] <- nms
      st_depth[at] <- depth + 1L
      st_mode[at] <- ifelse(big, ALEAF, PLAIN)
      n_st <- n_st + n_a
    }
  }
  n <- seq_len(n)
  list(
    desc = list(
      summary = .fm_summary(x),
      kind = o_kind[n], s4 = o_s4[n], nattr = o_nattr[n],
      aname = o_aname[n], len = o_len[n], data = o_data[n]
    ),
    leaves = leaves[seq_len(n_leaves)]
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
# returns failures as a value (the returned form, see R/error.R) -- and the result is returned directly by
# every function on the way back to the user (fmalloc_get(), fmalloc_save()).
# `heap` has been checked (.fm_heap()); Rust resolves it again.
.fm_assemble <- function(heap, name, call) {
  obj <- suspendInterrupts(.Call(savvy_fmalloc_named_get__impl, heap, name)) # see .rfm()
  if (inherits(obj, "fmalloc_failure")) {
    .fmalloc_raise(unclass(obj), call)
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
#' Objects whose class R's own methods fail on, and which a read would
#' therefore refuse as damaged, are refused too (class `fmalloc_invalid`,
#' nothing is written): a factor without character levels, with a level
#' twice or with codes that are not levels, a data frame that is not a list
#' or whose row names do not match its columns, a `POSIXct` whose time zone
#' is not character.
#' So is an object with a class of a package that is not loaded
#' (`fmalloc_unsupported`, before R's own functions would load it): it could
#' not be read back without loading that package, which Rfmalloc never
#' does.
#'
#' Saving costs no copy for vectors whose data already live in the heap
#' (created by [create_fmalloc_vector()], either method): the saved object
#' and `x` then share their data. This includes saving an object got from
#' the heap again, after changing its attributes:
#' `fmalloc_save(x, name, heap, overwrite = TRUE)` keeps the data of every
#' vector of `x` for which [is_fmalloc()] is still `TRUE` where they are and
#' rewrites only the description (see also [fmalloc_set_attr()]). Modify it in place through the value
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
#' not changed. Whether R modifies in place depends on invisible reference
#' counts (and on the replacement method: `df[i, j] <- v`, factors and dates
#' go through R functions that copy); [fmalloc_write()] writes into the file
#' whatever they are, or fails with an error.
#' `vignette("persistent-vectors")` has a table of which idioms persist.
#'
#' **Two `fmalloc_get()` of one name are views of the same data**, not
#' copies: a write through one (in place, or with [fmalloc_write()]) is seen
#' by the other, and by every later `fmalloc_get()`. So
#' `backup <- fmalloc_get(name)` is not a backup: take a copy with
#' `fmalloc_get(name, copy = TRUE)`, an ordinary object in memory that no
#' longer changes with the heap (nor writes to it). Save it under another
#' name (`fmalloc_save(x, "backup")`) to keep a copy in the heap.
#' Views also overlap as memory does: R writes `x[i] <- y` element by
#' element while it reads `y`, so when `y` is another view of `x`'s data
#' and the positions overlap (`x[6:1] <- y` reverses nothing: the second
#' half reads what the first half just wrote) `y`'s later elements are
#' read after being overwritten, as C's `memcpy()` of overlapping memory
#' does. [fmalloc_write()] reads all of `value` first; or assign a copy
#' (`x[6:1] <- fmalloc_get(name, copy = TRUE)`; `x[] <- rev(y)`, as `rev()`
#' returns a new vector).
#'
#' **data.table** objects are stored without their internal self-reference
#' (a pointer of the session). When data.table is loaded before
#' `fmalloc_get()`, the result is a working data.table at once (made by
#' `data.table::setalloccol()`, which copies no column data); otherwise
#' data.table remakes it, with a warning, at the first `:=`. Columns added
#' with `:=` and keys set with `setkey()` live in the session only until the
#' data.table is saved again (`fmalloc_save(DT, name, overwrite = TRUE)`);
#' so does the order `setkey()` or `setorder()` gives the rows: they reorder
#' copies of the columns in memory (`is_fmalloc()` of a column is then
#' `FALSE`) and leave the heap's data as they were. Write single cells with
#' [fmalloc_write()] (or `data.table::set()`, which writes into the column
#' data in place).
#'
#' `fmalloc_rm()` removes a name and frees the space of its data once no
#' vector of this session uses them any more (vectors still in use stay
#' valid). `fmalloc_rename()` renames atomically. Names are non-empty
#' strings. Each save, removal and rename is one atomic commit, durable when
#' it returns with the default `sync = "commit"` of [fmalloc_open()] (see
#' there for `sync = "none"`); [fmalloc_batch()] makes many of them one
#' commit. `fmalloc_get()` and `fmalloc_exists()` read a few catalog pages
#' (O(log n) in the number of objects); `fmalloc_ls()` reads the catalog
#' alone, not the objects' metadata.
#'
#' A heap opened with `readonly = TRUE` checks the catalog's pages as it
#' reads them. If some are damaged (e.g. a heap whose newest commit a
#' writable open refuses), `fmalloc_ls()` lists the objects of every page
#' it can read, and warns (class `fmalloc_damaged`, also `fmalloc_warning`)
#' naming the damaged pages and how many objects they hide; so do `names()`,
#' `print()` and `summary()` of the heap. The objects listed read normally
#' with `fmalloc_get()`; [fmalloc_check()] reports the damaged pages.
#'
#' @param x An object to save.
#' @param name The object's name in the heap: a single non-empty string.
#' @param heap A heap handle from [fmalloc_open()], or `NULL` for the
#'   session's default heap (see [init_fmalloc()]).
#' @param overwrite Replace an existing object of that name? If `FALSE`
#'   (the default) an existing name gives an error of class `fmalloc_exists`.
#' @param from,to Old and new name.
#' @param copy For `fmalloc_get()`: `TRUE` to get an ordinary copy in
#'   memory (reading all the data) instead of views of the heap file.
#'
#' @returns `fmalloc_save()` returns (invisibly) the heap-backed version of
#'   `x`, what `fmalloc_get(name)` would return. `fmalloc_get()` returns the
#'   object (with `copy = TRUE`, a copy in memory: [is_fmalloc()] is `FALSE`
#'   for its vectors). `fmalloc_exists()` returns `TRUE` or `FALSE`. `fmalloc_ls()`
#'   returns a data frame with one row per object and columns `name`, `type`
#'   (of the top-level object: `"list"` for data frames and lists), `class`
#'   (classes joined by `/`), `length` (rows for data frames; integer, or
#'   double when a length exceeds `.Machine$integer.max`; printed without
#'   e-notation either way, as is `bytes`), `dim`
#'   (e.g. `"3x4"`, or `NA`), `bytes` (of the data in the heap), `created` and
#'   `modified` (`POSIXct`) and `status`: `"ok"`, or `"damaged: "` and why
#'   the object cannot be read (its `type`, `class`, `length`, `dim` and
#'   `bytes` are then `NA`; [fmalloc_check()] reports it too; a damaged
#'   object damages only itself: it can still be removed, renamed or
#'   overwritten). `fmalloc_rm()` and `fmalloc_rename()` return `NULL`
#'   invisibly.
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
  if (missing(x) || missing(name)) .fm_missing_args(c("x", "name"), sys.call())
  call <- sys.call()
  name <- .check_name(name, "name")
  .check_flag(overwrite, "overwrite")
  heap <- .fm_heap(heap, call)
  # Validate the whole object before anything is written. (The label, for
  # error messages, is deparsed only when one is needed.)
  parts <- .fm_decompose(x, .fm_label(substitute(x)), call)
  # Returned directly: see .fm_store().
  invisible(.fm_store(heap, name, parts, overwrite, call))
}

# Saves the decomposed object `parts` under `name` and returns the
# heap-backed object, in one call into Rust. Failures are returned, not
# raised, and the result is returned directly from a frame that binds
# nothing else, for the reasons given at .fm_assemble() (fmalloc_save()'s
# own frame may outlive the call: the closures of .fm_decompose_walk() keep
# a promise to it alive, so a result bound there would look shared). Copies
# that take more than 2 s show their progress (interactive only; the options
# fmalloc.progress_after/_chunk are for the tests).
.fm_store <- function(heap, name, parts, overwrite, call) {
  progress <- interactive() && !isFALSE(getOption("fmalloc.progress"))
  after <- .fm_number_option("fmalloc.progress_after", 2)
  chunk <- .fm_number_option("fmalloc.progress_chunk", 2^30)
  obj <- .fm_uninterrupted( # see .rfm()
    fmalloc_named_store(heap, name, parts$desc, parts$leaves, overwrite, progress, after, chunk)
  )
  if (inherits(obj, "fmalloc_failure")) {
    .fmalloc_raise(unclass(obj), call)
  }
  obj
}

# A numeric option (the progress settings, for the tests): its default
# unless it is one number.
.fm_number_option <- function(name, default) {
  v <- getOption(name, default)
  if (is.numeric(v) && length(v) == 1L && !is.na(v)) as.double(v) else default
}

# How fmalloc_save()'s error messages name `x`: its expression, or "x" when
# that is longer than 40 characters.
.fm_label <- function(expr) {
  label <- if (is.symbol(expr)) {
    as.character(expr) # what deparse1() gives, without its cost
  } else {
    deparse1(expr)
  }
  if (nchar(label) > 40L) "x" else label
}

# create_fmalloc_vector(name = ): a new vector saved under `name` without a
# copy; returns the heap-backed vector fmalloc_get(name) would return.
.fmalloc_create_named <- function(type, length, heap, method, init, name, call) {
  name <- .check_name(name, "name", call)
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
fmalloc_get <- function(name, heap = NULL, copy = FALSE) {
  if (missing(name)) .fm_missing_args("name", sys.call())
  call <- sys.call()
  name <- .check_name(name, "name")
  .check_flag(copy, "copy")
  if (copy) {
    heap <- .fm_heap(heap, call)
    return(.fm_data_table(.rfm(fmalloc_write_copy(.fm_assemble(heap, name, call)), call)))
  }
  # The common path calls few functions (R lazy-loads each at its first
  # call: most of what a session's first get costs): .fm_heap() and
  # .fm_assemble() written out.
  if (is.null(heap)) heap <- .fmalloc_default_heap(call)
  .check_heap(heap, call = call)
  x <- suspendInterrupts(.Call(savvy_fmalloc_named_get__impl, heap, name)) # see .rfm()
  if (inherits(x, "fmalloc_failure")) .fmalloc_raise(unclass(x), call)
  # Returned directly: see .fm_assemble().
  if (inherits(x, "data.table")) .fm_data_table(x) else x
}

# A data.table is stored without its self-reference (an external pointer);
# data.table's own setalloccol() remakes it -- and the over-allocated column
# list that lets `:=` add columns -- when data.table is loaded. (A package
# named in a heap file is never loaded: see check_packages() in
# src/rust/src/r/named_assemble.rs.) Without it, data.table warns about an
# invalid .internal.selfref at the first `:=` and fixes it with a copy.
.fm_data_table <- function(x) {
  if (!inherits(x, "data.table") || !isNamespaceLoaded("data.table")) {
    return(x)
  }
  getExportedValue("data.table", "setalloccol")(x)
}

#' @rdname fmalloc_save
#' @export
fmalloc_exists <- function(name, heap = NULL) {
  if (missing(name)) .fm_missing_args("name", sys.call())
  call <- sys.call()
  name <- .check_name(name, "name")
  heap <- .fm_heap(heap, call)
  .rfm(fmalloc_named_exists(heap, name), call)
}

#' @rdname fmalloc_save
#' @export
fmalloc_ls <- function(heap = NULL) {
  call <- sys.call()
  heap <- .fm_heap(heap, call)
  # The columns come from Rust in their final order and types (length and
  # bytes integer when every value fits, as length() gives; doubles such as
  # 1e6 would print as "1e+06"). A damaged entry still gets its row (NA
  # fields, `status` says why); fmalloc_get() of it is an fmalloc_corrupt
  # error. The data frame is made directly (what data.frame() would make,
  # without its per-column checks).
  cols <- .rfm(fmalloc_named_list(heap), call)
  # Damaged catalog pages (met after a read-only open, which checks the root
  # page only): the rows of the readable pages, and a warning saying what
  # the others hide.
  damaged <- attr(cols, "damaged")
  if (!is.null(damaged)) {
    attr(cols, "damaged") <- NULL
    .fmalloc_warn(fmalloc_heap_path(heap), damaged, "fmalloc_damaged", call)
  }
  cols$created <- .POSIXct(cols$created)
  cols$modified <- .POSIXct(cols$modified)
  cols <- .fmalloc_ls_frame(cols)
  attr(cols, "row.names") <- .set_row_names(length(cols$name))
  cols
}

#' @rdname fmalloc_save
#' @export
fmalloc_rm <- function(name, heap = NULL) {
  if (missing(name)) .fm_missing_args("name", sys.call())
  call <- sys.call()
  name <- .check_name(name, "name")
  heap <- .fm_heap(heap, call)
  .rfm(fmalloc_named_remove(heap, name), call)
  invisible(NULL)
}

#' @rdname fmalloc_save
#' @export
fmalloc_rename <- function(from, to, heap = NULL, overwrite = FALSE) {
  if (missing(from) || missing(to)) .fm_missing_args(c("from", "to"), sys.call())
  call <- sys.call()
  from <- .check_name(from, "from")
  to <- .check_name(to, "to")
  .check_flag(overwrite, "overwrite")
  heap <- .fm_heap(heap, call)
  .rfm(fmalloc_named_rename(heap, from, to, overwrite), call)
  invisible(NULL)
}
