# Explicit writes into named objects: fmalloc_write() and fmalloc_set_attr().
#
# R decides invisibly whether `x[i] <- v` modifies a heap vector in place
# (the write reaches the file) or a copy (it does not): reference counts,
# replacement methods that are closures (`[<-.data.frame`, `[<-.factor`,
# `[<-.Date`), a value of another type. These functions do not go through
# `[<-`: they get the object (zero-copy), pick the vector to write (the
# object, a column), turn the user's indices into 1-based positions and the
# value into the stored type -- checking everything before anything is
# written -- and Rust copies the value into the mapped block
# (src/rust/src/r/write.rs): one memmove for consecutive positions.

# Stands for a missing `i`, `j` or `value`.
.fm_missing <- structure(list(), class = "fmalloc_missing_arg")
# An empty `j` among five arguments: every column (see .fm_j()).
.fm_all_columns <- structure(list(), class = "fmalloc_all_columns")
.fm_is_missing <- function(x) inherits(x, "fmalloc_missing_arg")

#' Write into a named object, in the heap file
#'
#' `fmalloc_write()` writes values into the elements of a named object,
#' straight into the heap file. Unlike `x[i] <- value` on a vector from
#' [fmalloc_get()] -- which writes into the file only when R modifies the
#' vector in place, and silently modifies an ordinary copy otherwise (see
#' `vignette("persistent-vectors")` for which idioms persist) -- it either
#' writes into the file or fails with an error, whatever R's reference counts.
#' Other vectors of this session over the same object (every
#' [fmalloc_get()] of it) see the new values at once; other processes see
#' them too (they share the file).
#'
#' What can be written:
#' * **vectors** of every stored type: `fmalloc_write(heap, "x", i, value)`;
#'   `i` may be positions (1-based numbers), a logical vector with one
#'   element per element of the object, or names (for named vectors);
#' * **matrices**: `fmalloc_write(heap, "m", i, j, value = v)` (rows `i`,
#'   columns `j`, by number or dimnames; the value fills the cells column by
#'   column, as `m[i, j] <- v` does), a two-column matrix `i` of (row,
#'   column) pairs (one column per dimension for arrays), or positions in
#'   the matrix as a vector;
#' * **data frames**: rows `i` (numbers, logical or row names) of columns
#'   `j` (names or numbers); with several columns, `value` is a list or data
#'   frame with one element per column, or an atomic vector written to each;
#' * **factors** take level labels (character, or a factor): a label that
#'   is not a level is an error (add it first: `fmalloc_set_attr(heap, name,
#'   "levels", ...)`);
#' * **dates and times** (`Date`, `POSIXct`, `difftime`, or any class) take
#'   values of the same class, whose numbers are stored (a `difftime` is
#'   converted to the stored units first);
#' * **character vectors** take strings, stored in the object's string
#'   pool, which grows when needed.
#'
#' A missing `i` (or `j`) stands for all rows (columns). `value` has one
#' element per position, or one (written to every position). Writing a run
#' of consecutive positions (`i = from:to`) copies the values in one block.
#' On Linux and macOS a run of 1 MiB or more (131072 doubles) is written to
#' the file with one system call instead of through the memory map: no page
#' faults, and no zeroing of pages about to be overwritten; every vector over
#' the object sees the new values at once (the map and the file's page cache
#' are the same memory). On Linux the run's write-back to disk also starts at
#' once. So a chunked fill of a vector bigger than memory,
#' `for (from in seq(1, n, by = 1e6)) fmalloc_write(heap, "x",
#' from:min(from + 1e6 - 1, n), values)`, runs at the speed of the disk
#' (`bench/out-of-core.R`): chunks of about 1e6 elements are a good size
#' (R allocates each chunk's values; above 32 MiB every allocation costs a
#' page fault per 4 KiB).
#'
#' **The stored type is kept.** A value is converted only when that is
#' exact: integer or logical values into a double vector, whole numbers
#' into an integer vector, 0 and 1 (and `TRUE`/`FALSE`) into a logical
#' vector, numbers into a complex vector, whole numbers 0 to 255 into a raw
#' vector. Anything else -- `1.5` into an integer vector, `2` into a logical
#' one, a number into a character vector or a factor, a `Date` into a
#' `POSIXct` column -- is an error of class `fmalloc_type` and nothing is
#' written. `NA` (any `NA`, including `NaN` into an integer vector) is
#' stored as the stored type's `NA`; raw vectors have none.
#'
#' Positions are checked before anything is written: a position past the
#' end (or below 1, or a name the object does not have) is an error of
#' class `fmalloc_bounds` that names the argument and the value; objects
#' never grow. Other bad arguments are `fmalloc_invalid` errors; lists that
#' are not data frames are `fmalloc_unsupported`; a read-only heap gives
#' `fmalloc_readonly`.
#'
#' **Parallel workers.** Processes forked off the writer
#' ([parallel::mclapply()]) can call `fmalloc_write()` on the parent's heap
#' (pass the handle): writes of numbers, logicals and raw bytes reach the
#' file and the parent, so workers can fill disjoint ranges of one object in
#' parallel. Except for an object over which a classic vector
#' (`method = "classic"`) exists in the parent when it forks -- one in use,
#' or one dropped that R has not garbage collected yet: that object's pages
#' are the worker's own copy, and its writes stay in the worker (see the
#' vignette's section on forks). A character write that needs more room in the string pool (a
#' longer string) cannot be done in a worker: it is an `fmalloc_forked`
#' error and, when all values of one call could not be written in place,
#' nothing is written.
#'
#' **Attributes** (names, levels, dim, class, ...) are part of the object's
#' description in the catalog, not of its data: `names(x) <- v` on a vector
#' from the heap changes only that R object. `fmalloc_set_attr()` changes
#' one attribute of the object (or, with `j`, of one column or element) in
#' the heap, keeping its data where they are (no copy), in one atomic
#' catalog update. Saving a modified object with
#' `fmalloc_save(x, name, heap, overwrite = TRUE)` does the same for all of
#' its attributes: vectors of `x` whose data are still the object's (see
#' [is_fmalloc()]) are kept without a copy, the others are copied in.
#' Either way the whole description is written again, which takes time in
#' the number of the object's parts: about 17 microseconds per column of a
#' data frame (17 ms at 1000 columns), for each `fmalloc_set_attr()`. For
#' the attributes of many small columns, changing them on the object got
#' from the heap and saving it once with `overwrite = TRUE` is faster (R
#' copies a column whose attributes change, so its data are copied in).
#' `fmalloc_write()` looks its object up each time too (about 1
#' microsecond per column).
#'
#' @param heap A heap handle from [fmalloc_open()], or `NULL` for the
#'   session's default heap (see [init_fmalloc()]; the replacement form
#'   needs a variable).
#' @param name The object's name: a single string.
#' @param i,j Positions: rows (or elements) and columns, see Details.
#'   Missing means all.
#' @param value The values to write. In the function form give it by name
#'   (`value = `) when `j` is missing, except for vectors and a matrix `i`:
#'   `fmalloc_write(heap, name, i, value)` with four arguments writes those.
#' @param which The name of the attribute (`"names"`, `"levels"`, ...).
#'   `value = NULL` removes it.
#'
#' @returns `heap`, invisibly.
#' @seealso [fmalloc_save()], [is_fmalloc()]
#' @examples
#' path <- tempfile(fileext = ".bin")
#' heap <- fmalloc_open(path, size_gb = 0.1)
#' fmalloc_save(c(1L, 2L, 3L, 4L), "counts", heap)
#' fmalloc_save(data.frame(
#'   item = factor(c("tea", "coffee", "tea")),
#'   price = c(3.5, 4.25, 3.5),
#'   day = as.Date("2024-01-01") + 0:2
#' ), "prices", heap)
#'
#' fmalloc_write(heap, "counts", 3, 42L)
#' fmalloc_write(heap, "counts", 1:2) <- c(10L, 20L) # replacement form
#' fmalloc_write(heap, "prices", 2, "price", value = 4.75)
#' fmalloc_write(heap, "prices", 3, "item", value = "coffee")
#' fmalloc_write(heap, "prices", 1, "day", value = as.Date("2024-02-01"))
#' fmalloc_get("counts", heap)
#' fmalloc_get("prices", heap)
#'
#' # The stored type is kept: no silent conversion
#' tryCatch(fmalloc_write(heap, "counts", 1, 1.5), fmalloc_type = conditionMessage)
#' tryCatch(fmalloc_write(heap, "counts", 5, 1L), fmalloc_bounds = conditionMessage)
#'
#' # A chunked fill
#' x <- create_fmalloc_vector("double", 1e6, heap = heap, name = "x")
#' for (from in seq(1, 1e6, by = 2.5e5)) {
#'   fmalloc_write(heap, "x", from:(from + 2.5e5 - 1), runif(2.5e5))
#' }
#'
#' # Attributes
#' fmalloc_set_attr(heap, "counts", "names", c("a", "b", "c", "d"))
#' fmalloc_set_attr(heap, "prices", "levels", c("COFFEE", "TEA"), j = "item")
#' fmalloc_get("counts", heap)
#' levels(fmalloc_get("prices", heap)$item)
#' rm(x)
#' fmalloc_close(heap)
#' unlink(path)
#' @export
fmalloc_write <- function(heap, name, i, j, value) {
  if (missing(heap) || missing(name)) .fm_missing_args(c("heap", "name"), sys.call())
  .fm_write(
    heap, name, if (missing(i)) .fm_missing else i, .fm_j(missing(j), nargs(), j),
    if (missing(value)) .fm_missing else value, sys.call()
  )
  invisible(heap)
}

# `j` as given: a `j` left empty among five arguments (`m[1, ]`:
# fmalloc_write(heap, name, 1, , value)) selects every column; a `j` not
# given at all (fmalloc_write(heap, name, i, value = )) selects nothing
# (vector positions in `i`), as `m[1]`.
.fm_j <- function(missing_j, n_args, j) {
  if (!missing_j) j else if (n_args == 5L) .fm_all_columns else .fm_missing
}

#' @rdname fmalloc_write
#' @export
`fmalloc_write<-` <- function(heap, name, i, j, value) {
  if (missing(heap) || missing(name) || missing(value)) {
    .fm_missing_args(c("heap", "name", "value"), sys.call())
  }
  .fm_write(
    heap, name, if (missing(i)) .fm_missing else i, .fm_j(missing(j), nargs(), j),
    value, sys.call()
  )
  heap
}

#' @rdname fmalloc_write
#' @export
fmalloc_set_attr <- function(heap, name, which, value, j = NULL) {
  if (missing(heap) || missing(name) || missing(which)) {
    .fm_missing_args(c("heap", "name", "which"), sys.call())
  }
  call <- sys.call()
  if (!missing(value)) force(value) # before the object is read, as in .fm_write()
  force(j)
  heap <- .fm_heap(heap, call)
  name <- .check_name(name, "name", call)
  .check_string(which, "which", call)
  obj <- .fm_assemble(heap, name, call)
  if (is.null(j)) {
    obj <- .fm_set_attr1(obj, which, value, sprintf("'%s'", name), call)
  } else {
    if (!is.list(obj)) {
      .invalid(sprintf(
        "`j` selects a column or element: '%s' is %s, not a data frame or list",
        name, .fm_kind_of(obj)
      ), call)
    }
    k <- .fm_select(j, length(obj), "j", names(obj), sprintf("'%s'", name), "columns", call)
    if (length(k) != 1L) {
      .invalid(sprintf("`j` must select one column or element, not %d", length(k)), call)
    }
    obj[[k]] <- .fm_set_attr1(obj[[k]], which, value, .fm_part(name, obj, k), call)
  }
  parts <- .fm_decompose(obj, name, call)
  .rfm(fmalloc_named_save(heap, name, parts$desc, parts$leaves, TRUE), call)
  invisible(heap)
}

# `x` with attribute `which` set to `value`. A heap vector is replaced by a
# fresh view of its block first: R would copy a shared vector's data to
# change its attributes, and the object would then be saved with a copy.
.fm_set_attr1 <- function(x, which, value, what, call) {
  if (is.atomic(x) && length(x) > 0L && is_fmalloc(x)) {
    x <- .rfm(fmalloc_write_view(x), call)
  }
  if (identical(which, "levels") && is.factor(x) && length(value) < nlevels(x)) {
    # As levels<- of a factor: fewer levels would leave codes pointing past
    # them (a malformed factor, in the file).
    .invalid(sprintf(
      "cannot set attribute \"levels\" of %s: it has %d levels, %d given (levels can be added, not removed)",
      what, nlevels(x), length(value)
    ), call)
  }
  tryCatch(
    attr(x, which) <- value,
    error = function(e) {
      .invalid(sprintf("cannot set attribute \"%s\" of %s: %s", which, what, conditionMessage(e)), call)
    }
  )
  x
}

.fm_kind_of <- function(x) {
  if (is.data.frame(x)) return("a data frame")
  if (!is.null(dim(x))) return(sprintf("a %d-dimensional array", length(dim(x))))
  sprintf("a vector of class <%s>", paste(class(x), collapse = "/"))
}

.fm_part <- function(name, obj, k) {
  nm <- names(obj)[k]
  if (is.null(nm) || is.na(nm) || !nzchar(nm)) sprintf("'%s[[%d]]'", name, k) else sprintf("'%s$%s'", name, nm)
}

.fm_write <- function(heap, name, i, j, value, call) {
  # Every argument is evaluated before the object is looked up: code in one
  # (removing or overwriting the object) must not leave the write aimed at
  # what was there before, where it would land in no object.
  force(i)
  force(j)
  force(value)
  heap <- .fm_heap(heap, call)
  name <- .check_name(name, "name", call)
  obj <- .fm_assemble(heap, name, call)
  two_dim <- is.data.frame(obj) || length(dim(obj)) == 2L
  if (.fm_is_missing(value)) {
    given_j <- !.fm_is_missing(j) && !inherits(j, "fmalloc_all_columns")
    if (given_j && (!two_dim || (!is.data.frame(obj) && is.matrix(i)))) {
      # fmalloc_write(heap, name, i, value) for vectors and a matrix `i`.
      value <- j
      j <- .fm_missing
    } else {
      .invalid(paste(
        "`value` is missing: give it by name, fmalloc_write(heap, name, i, j, value = ),",
        "or use fmalloc_write(heap, name, i, j) <- value"
      ), call)
    }
  }
  writes <- .fm_plan(obj, name, i, j, value, call)
  # Everything was checked and converted: now write.
  for (w in writes) {
    pos <- w$pos
    if (pos$count == 0) next
    if (is.null(pos$index)) {
      .rfm(fmalloc_write_run(w$target, as.double(pos$first), as.double(pos$count), w$value), call)
    } else {
      .rfm(fmalloc_write_at(w$target, pos$index, w$value), call)
    }
  }
  invisible(NULL)
}

# The writes fmalloc_write() makes: a list of list(target, pos, value),
# every one checked and its value converted.
.fm_plan <- function(obj, name, i, j, value, call) {
  what <- sprintf("'%s'", name)
  all_cols <- inherits(j, "fmalloc_all_columns")
  if (all_cols) j <- .fm_missing
  if (is.data.frame(obj)) {
    labels <- .fm_row_names(obj)
    if (is.null(labels) && is.character(i)) {
      # Integer row names (automatic "1", "2", ..., or those a subset
      # keeps, 3:5): no labels are made for the whole table; a label that
      # is such a number stands for the row of that name, as in
      # df["2", "b"].
      num <- suppressWarnings(as.integer(i))
      num[is.na(num) | as.character(num) != i] <- NA_integer_
      rn <- .row_names_info(obj, 0L)
      pos <- if (is.integer(rn) && length(rn) == 2L && is.na(rn[[1L]])) {
        ifelse(num >= 1L & num <= nrow(obj), num, NA_integer_) # automatic: 1..n
      } else {
        match(num, rn)
      }
      if (anyNA(pos)) {
        .fm_bounds(sprintf("`i` = %s: %s has no row named so (its row names are numbers)",
                           .fm_show(i[is.na(pos)][[1L]]), what), call)
      }
      i <- pos
    }
    rows <- .fm_positions(i, nrow(obj), "i", labels, what, "rows", call)
    cols <- .fm_select(j, length(obj), "j", names(obj), what, "columns", call)
    if (is.list(value)) {
      if (length(value) != length(cols)) {
        .invalid(sprintf(
          "`value` is a list of %d elements for %d columns", length(value), length(cols)
        ), call)
      }
      values <- unclass(value)
    } else {
      values <- rep(list(value), length(cols))
    }
    return(lapply(seq_along(cols), function(k) {
      col <- obj[[cols[[k]]]]
      part <- .fm_part(name, obj, cols[[k]])
      if (!is.atomic(col) || !is.null(dim(col))) {
        .fm_unsupported_target(part, "not a vector column", call)
      }
      list(target = col, pos = rows, value = .fm_value(col, values[[k]], rows$count, part, call))
    }))
  }
  if (!is.atomic(obj)) {
    .fm_unsupported_target(what, sprintf("a %s", if (is.list(obj)) "list" else typeof(obj)), call)
  }
  d <- dim(obj)
  if (!.fm_is_missing(j) || all_cols) {
    if (length(d) != 2L) {
      .invalid(sprintf(
        "`j` selects columns of matrices and data frames: %s is %s; give positions in `i`",
        what, .fm_kind_of(obj)
      ), call)
    }
    rows <- .fm_select(i, d[[1L]], "i", rownames(obj), what, "rows", call)
    cols <- .fm_select(j, d[[2L]], "j", colnames(obj), what, "columns", call)
    index <- rep(rows, times = length(cols)) + rep((cols - 1) * d[[1L]], each = length(rows))
    pos <- .fm_positions(index, length(obj), "i", NULL, what, "elements", call)
  } else if (is.matrix(i) && is.numeric(i) && length(d) >= 2L && ncol(i) == length(d)) {
    index <- rep(1, nrow(i))
    stride <- 1
    for (k in seq_along(d)) {
      p <- .fm_select(i[, k], d[[k]], sprintf("i[, %d]", k), NULL, what,
                      sprintf("extent in dimension %d", k), call)
      index <- index + (p - 1) * stride
      stride <- stride * d[[k]]
    }
    pos <- .fm_positions(index, length(obj), "i", NULL, what, "elements", call)
  } else {
    pos <- .fm_positions(i, length(obj), "i", names(obj), what, "elements", call)
  }
  list(list(target = obj, pos = pos, value = .fm_value(obj, value, pos$count, what, call)))
}

.fm_unsupported_target <- function(what, is, call) {
  .fmalloc_abort(sprintf(
    "Rfmalloc: fmalloc_write() writes into vectors, matrices and data frame columns: %s is %s; nothing was written",
    what, is
  ), "fmalloc_unsupported", call)
}

.fm_row_names <- function(df) {
  rn <- .row_names_info(df, 0L)
  if (is.character(rn)) rn else NULL
}

.fm_bounds <- function(message, call) {
  .fmalloc_abort(paste0("Rfmalloc: ", message, "; nothing was written"), "fmalloc_bounds", call)
}

.fm_show <- function(v) {
  if (is.character(v)) encodeString(v, quote = "\"") else format(v, digits = 15L)
}

# The 1-based positions `idx` selects among `n` (numbers, logical with one
# element per position, or labels): list(first, count, index), where index
# is NULL for consecutive positions `first`, `first + 1`, ... (all of them
# when `idx` is missing). Errors name `arg` and the value.
.fm_positions <- function(idx, n, arg, labels, what, unit, call) {
  if (.fm_is_missing(idx)) {
    return(list(first = 1, count = n, index = NULL))
  }
  if (is.factor(idx)) idx <- as.character(idx)
  if (is.logical(idx)) {
    if (length(idx) != n) {
      .invalid(sprintf(
        "`%s` is a logical vector of length %d: it must have one element per %s of %s (%s)",
        arg, length(idx), sub("s$", "", unit), what, format(n)
      ), call)
    }
    if (anyNA(idx)) .invalid(sprintf("`%s` must not hold NA", arg), call)
    idx <- which(idx)
  } else if (is.character(idx)) {
    if (is.null(labels)) {
      .fm_bounds(sprintf("`%s` = %s: %s has no names for its %s", arg, .fm_show(idx[[1L]]), what, unit), call)
    }
    p <- match(idx, labels)
    if (anyNA(p)) {
      .fm_bounds(sprintf(
        "`%s` = %s is not among the names of the %s of %s", arg,
        .fm_show(idx[[which(is.na(p))[[1L]]]]), unit, what
      ), call)
    }
    idx <- p
  } else if (!is.numeric(idx) || is.object(idx)) {
    .invalid(sprintf(
      "`%s` must be positions (numbers), a logical vector or names, not <%s>",
      arg, paste(class(idx), collapse = "/")
    ), call)
  }
  found <- .rfm(fmalloc_write_scan(idx, as.double(n)), call)
  switch(found$kind,
    run = list(first = found$at, count = length(idx), index = NULL),
    scatter = list(first = NA_real_, count = length(idx), index = idx),
    {
      v <- found$value
      entry <- if (length(idx) > 1L) sprintf(" (element %s)", format(found$at)) else ""
      if (is.na(v)) {
        .invalid(sprintf("`%s` must not hold NA%s", arg, entry), call)
      }
      if (is.finite(v) && v != trunc(v)) {
        .invalid(sprintf("`%s` = %s%s is not a whole number", arg, .fm_show(v), entry), call)
      }
      .fm_bounds(sprintf(
        "`%s` = %s%s is out of bounds: %s has %s %s (positions start at 1)",
        arg, .fm_show(v), entry, what, format(n), unit
      ), call)
    }
  )
}

# Like .fm_positions(), as a vector of positions (rows, columns).
.fm_select <- function(idx, n, arg, labels, what, unit, call) {
  pos <- .fm_positions(idx, n, arg, labels, what, unit, call)
  if (is.null(pos$index)) {
    if (pos$count == 0) integer() else seq(pos$first, length.out = pos$count)
  } else {
    pos$index
  }
}

.fm_type_error <- function(message, call) {
  .fmalloc_abort(paste0("Rfmalloc: ", message, "; nothing was written"), "fmalloc_type", call)
}

# `value` as the stored type of `target` (1 or `count` elements), or an
# fmalloc_type error: conversions are made only when exact.
.fm_value <- function(target, value, count, what, call) {
  if (!is.atomic(value) || is.null(value)) {
    .invalid(sprintf("`value` must be an atomic vector, not <%s>", paste(class(value), collapse = "/")), call)
  }
  n <- length(value)
  if (n != 1L && n != count) {
    .invalid(sprintf(
      "`value` has %s elements for %s positions of %s (give one, or one per position)",
      format(n), format(count), what
    ), call)
  }
  type <- typeof(target)
  all_na <- is.logical(value) && !is.object(value) && all(is.na(value))
  if (all_na) {
    if (type == "raw") .fm_type_error(sprintf("%s is a raw vector, which has no NA", what), call)
    return(rep(switch(type,
      logical = NA, integer = NA_integer_, double = NA_real_,
      complex = NA_complex_, character = NA_character_
    ), n))
  }
  if (is.factor(target)) {
    if (is.factor(value)) value <- as.character(value)
    if (!is.character(value)) {
      .fm_type_error(sprintf(
        "%s is a factor: give level labels (character), not <%s>", what,
        paste(class(value), collapse = "/")
      ), call)
    }
    codes <- match(value, levels(target))
    bad <- which(!is.na(value) & is.na(codes))
    if (length(bad) > 0L) {
      .fm_type_error(sprintf(
        "%s is not a level of %s (add it first with fmalloc_set_attr(heap, name, \"levels\", ...))",
        .fm_show(value[[bad[[1L]]]]), what
      ), call)
    }
    return(codes)
  }
  if (is.factor(value)) {
    if (type != "character") {
      .fm_type_error(sprintf(
        "`value` is a factor and %s is %s: give its values, not factor codes", what, .fm_type_name(type)
      ), call)
    }
    value <- as.character(value)
  }
  cls <- oldClass(target)
  if (inherits(target, "difftime")) {
    if (!inherits(value, "difftime")) {
      .fm_type_error(sprintf("%s is a difftime: give a difftime (as.difftime()), not <%s>", what,
                             paste(class(value), collapse = "/")), call)
    }
    units(value) <- units(target)
  } else if (!is.null(cls) && !identical(oldClass(value), cls)) {
    .fm_type_error(sprintf(
      "%s is <%s>; `value` is <%s>: convert it first (e.g. as.Date(), as.POSIXct())",
      what, paste(cls, collapse = "/"), paste(class(value), collapse = "/")
    ), call)
  }
  if (!is.null(attributes(value))) attributes(value) <- NULL
  .fm_storable(value, type, what, call)
}

# An unclassed atomic `v` as type `type`, when exact.
.fm_storable <- function(v, type, what, call) {
  from <- typeof(v)
  if (from == type) return(v)
  refuse <- function(bad = NULL) {
    if (is.null(bad)) {
      .fm_type_error(sprintf("%s is %s; `value` is %s", what, .fm_type_name(type), .fm_type_name(from)), call)
    }
    k <- which(bad)[[1L]]
    .fm_type_error(sprintf(
      "`value` %s%s cannot be stored exactly in %s, which is %s",
      .fm_show(v[[k]]), if (length(v) > 1L) sprintf(" (element %d)", k) else "",
      what, .fm_type_name(type)
    ), call)
  }
  numeric <- from %in% c("logical", "integer", "double")
  switch(type,
    logical = {
      if (!numeric) refuse()
      bad <- !is.na(v) & v != 0 & v != 1
      if (any(bad)) refuse(bad)
      as.logical(v)
    },
    integer = {
      if (!numeric) refuse()
      if (from == "double") {
        bad <- !is.na(v) & (!is.finite(v) | v != trunc(v) | abs(v) > .Machine$integer.max)
        if (any(bad)) refuse(bad)
      }
      as.integer(v)
    },
    double = {
      if (!numeric) refuse()
      as.double(v)
    },
    complex = {
      if (!numeric) refuse()
      as.complex(v)
    },
    raw = {
      if (!from %in% c("integer", "double")) refuse()
      bad <- is.na(v) | v != trunc(v) | v < 0 | v > 255
      if (any(bad)) refuse(bad)
      as.raw(v)
    },
    refuse()
  )
}

.fm_type_name <- function(type) {
  switch(type,
    logical = "a logical vector", integer = "an integer vector", double = "a double vector",
    complex = "a complex vector", raw = "a raw vector", character = "a character vector",
    sprintf("of type %s", type)
  )
}
