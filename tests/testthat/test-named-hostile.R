# Hostile object metadata: a heap file is untrusted. Metas that would run
# code, crash R, recurse without bound or allocate without bound must each
# give a classed fmalloc_corrupt error (fmalloc_get) or an NA row
# (fmalloc_ls), and damage only their own object. The risky cases run in a
# child R process (callr), so a crash fails the test instead of the suite.

# --- Meta v2 bytes (inst/FORMAT.md, "Object metadata (meta v2)") -----------
u16 <- function(x) as.raw((x %/% 256^(0:1)) %% 256)
u32 <- function(x) as.raw((x %/% 256^(0:3)) %% 256)
u64 <- function(x) as.raw((x %/% 256^(0:7)) %% 256)
f64 <- function(x) writeBin(as.double(x), raw(), size = 8L, endian = "little")
hostile_summary <- function(type = "list", class = "list", length = 1) {
  c(u16(nchar(type, "bytes")), charToRaw(type), u32(nchar(class, "bytes")), charToRaw(class),
    f64(length), as.raw(0))
}
hostile_meta <- function(body, version = 2, summary = hostile_summary()) {
  c(charToRaw("RFMN"), u32(version), u32(length(summary)), summary, body)
}
node <- function(kind, nattr = 0, s4 = FALSE) c(as.raw(kind), as.raw(s4), u32(nattr))
list_node <- function(n, nattr = 0) c(node(1, nattr), u64(n))
block_node <- function(index, elem, nattr = 0) c(node(2, nattr), u32(index), as.raw(elem))
int_node <- function(v, nattr = 0) {
  c(node(4, nattr), u64(length(v)), writeBin(as.integer(v), raw(), size = 4L, endian = "little"))
}
dbl_node <- function(v, nattr = 0) c(node(5, nattr), u64(length(v)), f64(v))
str_node <- function(s, nattr = 0) {
  c(node(8, nattr), u64(length(s)), unlist(lapply(s, function(x) {
    c(as.raw(1), u32(nchar(x, "bytes")), charToRaw(x))
  })))
}
attr_entry <- function(name, value) c(u32(nchar(name, "bytes")), charToRaw(name), value)
ELEM_INTEGER <- 2
ELEM_DOUBLE <- 3

# Runs `f(path)` in a child R process; returns its value (a crash or an
# error there fails the test).
in_child <- function(f, ...) {
  callr::r(f, args = list(...), libpath = .libPaths())
}

test_that("a v1 (serialize) meta is refused by its version and never unserialized", {
  path <- local_heap_path()
  marker <- withr::local_tempfile(pattern = "pwned-")
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(1:3, "good", heap)
  # A v1 meta whose summary and body hold a promise, a closure and an
  # environment: unserialize() and any look at the result would run code.
  e <- new.env(parent = globalenv())
  code <- bquote({
    file.create(.(marker))
    assign("fm_pwned", TRUE, envir = globalenv())
    "list"
  })
  eval(bquote(delayedAssign("type", .(code), assign.env = e)))
  f <- eval(bquote(function(...) .(code)))
  environment(f) <- e
  summary <- serialize(e, NULL, xdr = FALSE)
  body <- serialize(list(skeleton = f, leaves = list(e)), NULL, xdr = FALSE)
  v1 <- c(charToRaw("RFMN"), u32(1), u32(length(summary)), summary, body)
  Rfmalloc:::fmalloc_named_put_raw_meta(heap, "evil", v1)
  fmalloc_close(heap)
  invisible(gc()) # drops the vectors fmalloc_save() returned, and the lock

  res <- in_child(function(path) {
    heap <- Rfmalloc::fmalloc_open(path, readonly = TRUE)
    ls <- Rfmalloc::fmalloc_ls(heap)
    err <- tryCatch(Rfmalloc::fmalloc_get("evil", heap), error = identity)
    list(
      ls = ls[c("name", "type", "class", "length", "dim")], class = class(err),
      msg = conditionMessage(err), good = Rfmalloc::fmalloc_get("good", heap),
      pwned = exists("fm_pwned", envir = globalenv())
    )
  }, path = path)
  expect_identical(res$class, c("fmalloc_corrupt", "fmalloc_error", "error", "condition"))
  expect_match(res$msg, "version 1", fixed = TRUE)
  expect_match(res$msg, "'evil'", fixed = TRUE)
  expect_identical(res$ls$name, c("evil", "good"))
  expect_identical(res$ls$type, c(NA, "integer"))
  expect_identical(res$ls$length, c(NA, 3L))
  expect_identical(res$good, 1:3)
  expect_false(res$pwned)
  expect_false(file.exists(marker))
  expect_false(exists("fm_pwned", envir = globalenv()))
})

# Puts each meta of `metas` under its name into a fresh heap whose object
# `v` holds one double block (c(1, 2)) and `i` one integer block (1:2); a
# meta put under "v" or "i" keeps that block. Then, in a child process,
# returns for each name the class and message of fmalloc_get()'s error (or
# "ok"), the listing, and whether the good objects still read.
probe_metas <- function(metas) {
  path <- local_heap_path(parent.frame())
  heap <- fmalloc_open(path, size_gb = 0.01)
  for (nm in names(metas)) {
    if (startsWith(nm, "v")) fmalloc_save(c(1, 2), nm, heap)
    if (startsWith(nm, "i")) fmalloc_save(1:2, nm, heap)
    Rfmalloc:::fmalloc_named_put_raw_meta(heap, nm, metas[[nm]])
  }
  fmalloc_save(list(a = 1:3, b = "x"), "good", heap)
  fmalloc_close(heap)
  invisible(gc()) # drops the vectors fmalloc_save() returned, and the lock
  in_child(function(path, names) {
    heap <- Rfmalloc::fmalloc_open(path)
    out <- lapply(names, function(nm) {
      tryCatch({
        Rfmalloc::fmalloc_get(nm, heap)
        c("ok", "")
      }, error = function(e) c(class(e)[[1]], conditionMessage(e)))
    })
    names(out) <- names
    list(
      get = out, ls = Rfmalloc::fmalloc_ls(heap)[c("name", "type")],
      good = Rfmalloc::fmalloc_get("good", heap)
    )
  }, path = path, names = names(metas))
}

expect_all_corrupt <- function(res, patterns) {
  for (nm in names(patterns)) {
    got <- res$get[[nm]]
    expect_identical(got[[1]], "fmalloc_corrupt", label = paste("class for", nm))
    expect_match(got[[2]], patterns[[nm]], label = paste("message for", nm))
    expect_match(got[[2]], sprintf("'%s'", nm), fixed = TRUE)
  }
  expect_identical(res$good, list(a = 1:3, b = "x"))
}

test_that("deep nesting is refused without recursion (lists and attributes)", {
  depth <- 1e5
  deep_lists <- hostile_meta(c(rep(list_node(1), depth), node(0)))
  # x with attribute "a", whose value has attribute "a", ...
  one <- c(node(7, 1), u64(0)) # raw(0) with one attribute
  deep_attrs <- hostile_meta(c(one, rep(c(u32(1), charToRaw("a"), one), depth),
                               u32(1), charToRaw("a"), node(0)))
  ok_depth <- hostile_meta(c(rep(list_node(1), 999), node(0)))
  res <- probe_metas(list(deep_lists = deep_lists, deep_attrs = deep_attrs, ok_depth = ok_depth))
  expect_all_corrupt(res, list(deep_lists = "nested deeper than 1000", deep_attrs = "nested deeper than 1000"))
  expect_identical(res$get$ok_depth[[1]], "ok")
  expect_identical(res$ls$name, c("deep_attrs", "deep_lists", "good", "ok_depth"))
  expect_identical(res$ls$type, c("list", "list", "list", "list")) # summaries are fine
})

test_that("saving an object nested deeper than the format allows is refused", {
  heap <- local_heap()
  x <- NULL
  for (k in 1:1001) x <- list(x)
  expect_fmalloc_error(fmalloc_save(x, "deep", heap), "fmalloc_unsupported", "nested deeper")
  expect_false(fmalloc_exists("deep", heap))
  y <- NULL
  for (k in 1:900) y <- list(y)
  fmalloc_save(y, "ok", heap)
  expect_identical(fmalloc_get("ok", heap), y)
})

test_that("huge declared lengths and counts are refused before allocating", {
  huge <- 2^52
  max64 <- as.raw(rep(255, 8))
  res <- probe_metas(list(
    huge_list = hostile_meta(list_node(huge)),
    huge_list_max = hostile_meta(c(node(1), max64)),
    huge_doubles = hostile_meta(c(node(5), u64(huge), f64(1))),
    huge_strings = hostile_meta(c(node(8), u64(huge), as.raw(1), u32(1), charToRaw("a"))),
    huge_string = hostile_meta(c(node(8), u64(1), as.raw(1), u32(2^32 - 1), charToRaw("a"))),
    huge_attrs = hostile_meta(c(node(7, 2^32 - 1), u64(0))),
    huge_summary = c(charToRaw("RFMN"), u32(2), u32(2^32 - 1), node(0)),
    huge_block = hostile_meta(block_node(2^32 - 1, ELEM_DOUBLE))
  ))
  expect_all_corrupt(res, list(
    huge_list = "count", huge_list_max = "count", huge_doubles = "count",
    huge_strings = "count", huge_string = "too long", huge_attrs = "attribute count",
    huge_summary = "summary length", huge_block = "block"
  ))
  # The summary of a damaged meta still lists (NA where unreadable).
  expect_identical(res$ls$type[res$ls$name == "huge_summary"], NA_character_)
  expect_identical(res$ls$type[res$ls$name == "huge_list"], "list")
})

test_that("attributes R would refuse are fmalloc_corrupt, checked before setAttrib", {
  dbl <- function(nattr) block_node(0, ELEM_DOUBLE, nattr)
  int <- function(nattr) block_node(0, ELEM_INTEGER, nattr)
  res <- probe_metas(list(
    v_dim = hostile_meta(c(dbl(1), attr_entry("dim", int_node(3L)))),
    v_dim_na = hostile_meta(c(dbl(1), attr_entry("dim", int_node(c(NA, 2L))))),
    v_dim_dbl = hostile_meta(c(dbl(1), attr_entry("dim", dbl_node(2)))),
    v_factor = hostile_meta(c(dbl(2), attr_entry("levels", str_node(c("a", "b"))),
                              attr_entry("class", str_node("factor")))),
    v_dimnames = hostile_meta(c(dbl(1), attr_entry("dimnames", c(list_node(1), str_node(c("a", "b")))))),
    v_dimnames_len = hostile_meta(c(dbl(2), attr_entry("dim", int_node(c(2L, 1L))),
                                    attr_entry("dimnames", c(list_node(2), str_node("a"), node(0))))),
    v_names = hostile_meta(c(dbl(1), attr_entry("names", str_node(c("a", "b", "c"))))),
    v_names_int = hostile_meta(c(dbl(1), attr_entry("names", int_node(1:2)))),
    v_tsp = hostile_meta(c(dbl(1), attr_entry("tsp", dbl_node(c(1, 5, 1))))),
    v_comment = hostile_meta(c(dbl(1), attr_entry("comment", int_node(1L)))),
    v_class_int = hostile_meta(c(dbl(1), attr_entry("class", int_node(1L)))),
    v_null_attr = hostile_meta(c(node(0, 1), attr_entry("a", node(0)))),
    v_s4_dim = hostile_meta(c(list_node(2), dbl(0), node(9, 1, TRUE), attr_entry("dim", int_node(0L)))),
    i_factor_nolevels = hostile_meta(c(int(1), attr_entry("class", str_node("factor")))),
    i_factor_dbllevels = hostile_meta(c(int(2), attr_entry("levels", dbl_node(c(1, 2))),
                                        attr_entry("class", str_node("factor")))),
    v_posixct_tz = hostile_meta(c(dbl(2), attr_entry("class", str_node(c("POSIXct", "POSIXt"))),
                                  attr_entry("tzone", int_node(5L)))),
    # A second value of an attribute replaced the one checked (levels 1L
    # on codes 2, 3; an integer time zone), and the check saw nothing.
    i_factor_levels_twice = hostile_meta(c(int(3), attr_entry("class", str_node("factor")),
                                           attr_entry("levels", str_node(c("a", "b", "c"))),
                                           attr_entry("levels", int_node(1L)))),
    v_tzone_twice = hostile_meta(c(dbl(3), attr_entry("class", str_node(c("POSIXct", "POSIXt"))),
                                   attr_entry("tzone", str_node("UTC")),
                                   attr_entry("tzone", int_node(5L)))),
    df_rows = hostile_meta(c(list_node(2, 2), attr_entry("class", str_node("data.frame")),
                               attr_entry("row.names", int_node(c(NA, -2147483647L))),
                               int_node(1:3), int_node(4:6))),
    df_rows_na = hostile_meta(c(list_node(1, 2), attr_entry("class", str_node("data.frame")),
                                  attr_entry("row.names", int_node(c(NA, NA))), int_node(1:3))),
    df_ragged = hostile_meta(c(list_node(2, 2), attr_entry("class", str_node("data.frame")),
                                 attr_entry("row.names", int_node(c(NA, -3L))),
                                 int_node(1:3), int_node(1L))),
    df_rn_dbl = hostile_meta(c(list_node(1, 2), attr_entry("class", str_node("data.frame")),
                                 attr_entry("row.names", dbl_node(c(NaN, -1e15, 3))), int_node(1:3))),
    # What R accepts still works: a factor on integers, a matrix, a frame.
    df_ok = hostile_meta(c(list_node(1, 2), attr_entry("class", str_node("data.frame")),
                             attr_entry("row.names", int_node(c(NA, -3L))), int_node(1:3))),
    i_factor_ok = hostile_meta(c(int(2), attr_entry("levels", str_node(c("a", "b"))),
                                 attr_entry("class", str_node("factor")))),
    v_matrix_ok = hostile_meta(c(dbl(2), attr_entry("dimnames", c(list_node(2), node(0), str_node("c"))),
                                 attr_entry("dim", int_node(c(2L, 1L)))))
  ))
  expect_all_corrupt(res, list(
    v_dim = "attribute 'dim'", v_dim_na = "attribute 'dim'", v_dim_dbl = "attribute 'dim'",
    v_factor = "attribute 'class'", v_dimnames = "attribute 'dimnames'",
    v_dimnames_len = "attribute 'dimnames'", v_names = "attribute 'names'",
    v_names_int = "attribute 'names'", v_tsp = "attribute 'tsp'",
    v_comment = "attribute 'comment'", v_class_int = "attribute 'class'",
    v_null_attr = "NULL", v_s4_dim = "attribute 'dim'",
    i_factor_nolevels = "factor without character levels",
    i_factor_dbllevels = "factor without character levels",
    v_posixct_tz = "time zone is not character",
    i_factor_levels_twice = "attribute 'levels' appears twice",
    v_tzone_twice = "attribute 'tzone' appears twice",
    df_rows = "3 rows", df_rows_na = "row.names", df_ragged = "column of 1 rows",
    df_rn_dbl = "row.names"
  ))
  expect_identical(res$get$df_ok[[1]], "ok")
  expect_identical(res$get$i_factor_ok[[1]], "ok")
  expect_identical(res$get$v_matrix_ok[[1]], "ok")
})

test_that("damaged metas damage only their own object; the heap reopens and lists", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(data.frame(a = 1:3, f = factor(c("u", "v", "u"))), "df", heap)
  fmalloc_save(c(x = 1.5), "v", heap)
  good <- Rfmalloc:::fmalloc_named_raw_meta(heap, "df")
  # Every truncation and a sweep of byte flips of a real meta: each must
  # read or fail cleanly (in this process: none may crash R).
  for (len in seq(0L, length(good) - 1L, by = 3L)) {
    Rfmalloc:::fmalloc_named_put_raw_meta(heap, "df", good[seq_len(len)])
    expect_fmalloc_error(fmalloc_get("df", heap), "fmalloc_corrupt")
  }
  suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned")
  invisible(gc()) # drops the vectors fmalloc_save() returned, and the lock
  outcomes <- in_child(function(path, good) {
    heap <- Rfmalloc::fmalloc_open(path)
    vapply(seq_along(good), function(i) {
      bad <- good
      bad[i] <- xor(bad[i], as.raw(0xff))
      Rfmalloc:::fmalloc_named_put_raw_meta(heap, "df", bad)
      tryCatch({
        Rfmalloc::fmalloc_get("df", heap)
        "ok"
      }, fmalloc_corrupt = function(e) "corrupt")
    }, "")
  }, path = path, good = good)
  expect_true(all(outcomes %in% c("ok", "corrupt")))
  expect_true(any(outcomes == "corrupt"))
  heap <- fmalloc_open(path)
  Rfmalloc:::fmalloc_named_put_raw_meta(heap, "df", good)
  expect_identical(fmalloc_get("df", heap), data.frame(a = 1:3, f = factor(c("u", "v", "u"))))
  expect_identical(fmalloc_get("v", heap), c(x = 1.5))
  suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned")
  invisible(gc()) # drops the vectors fmalloc_save() returned, and the lock
  heap <- fmalloc_open(path)
  on.exit(suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned"))
  expect_identical(fmalloc_ls(heap)$name, c("df", "v"))
  expect_identical(fmalloc_get("v", heap), c(x = 1.5))
})

test_that("a meta that fails its checksum damages only its own object", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(data.frame(a = 1:3, b = c("x", "y", "z")), "df", heap)
  fmalloc_save(c(1.5, 2.5), "v", heap)
  meta <- Rfmalloc:::fmalloc_named_raw_meta(heap, "df")
  fmalloc_close(heap)
  rm(heap)
  invisible(gc())
  # Flip one bit of df's meta in the file (not re-signed: a bad sector).
  bytes <- readBin(path, "raw", file.size(path))
  at <- grepRaw(meta, bytes, fixed = TRUE)
  expect_length(at, 1L)
  bytes[at + 20L] <- xor(bytes[at + 20L], as.raw(0x10))
  writeBin(bytes, path)
  # Before, the whole heap refused to open.
  heap <- fmalloc_open(path)
  ls <- fmalloc_ls(heap)
  expect_identical(ls$name, c("df", "v"))
  expect_identical(ls$status[2], "ok")
  # fmalloc_ls() reads the summary the catalog keeps, not the meta (it
  # decodes no meta): the damage shows at fmalloc_get() and fmalloc_check().
  expect_identical(ls$type[1], "list")
  expect_true(fmalloc_exists("df", heap))
  expect_fmalloc_error(fmalloc_get("df", heap), "fmalloc_corrupt", "checksum")
  chk <- fmalloc_check(heap)
  expect_true(any(chk$object == "df" & grepl("checksum", chk$problem)))
  expect_identical(fmalloc_get("v", heap)[], c(1.5, 2.5))
  # It can still be removed; the heap is whole again.
  fmalloc_rm("df", heap)
  expect_identical(fmalloc_ls(heap)$status, "ok")
  fmalloc_close(heap)
})

test_that("a class naming a package that is not loaded never makes R load it", {
  # A double block with the S4 bit whose class "mle" says package "stats4":
  # building (or showing) it would make R load stats4 and run its code.
  s4_block <- function(pkg) {
    hostile_meta(c(node(2, 1, TRUE), u32(0), as.raw(ELEM_DOUBLE),
                   attr_entry("class", c(str_node("mle", 1), attr_entry("package", str_node(pkg))))))
  }
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  for (nm in c("v_stats4", "v_global")) fmalloc_save(c(1, 2), nm, heap)
  Rfmalloc:::fmalloc_named_put_raw_meta(heap, "v_stats4", s4_block("stats4"))
  Rfmalloc:::fmalloc_named_put_raw_meta(heap, "v_global", s4_block(".GlobalEnv"))
  fmalloc_close(heap)
  invisible(gc())
  res <- in_child(function(path) {
    heap <- Rfmalloc::fmalloc_open(path, readonly = TRUE)
    before <- "stats4" %in% loadedNamespaces()
    got <- tryCatch({
      Rfmalloc::fmalloc_get("v_stats4", heap)
      c("ok", "")
    }, error = function(e) c(class(e)[[1]], conditionMessage(e)))
    global <- tryCatch(isS4(Rfmalloc::fmalloc_get("v_global", heap)), error = conditionMessage)
    list(before = before, got = got, after = "stats4" %in% loadedNamespaces(), global = global)
  }, path = path)
  expect_false(res$before)
  expect_identical(res$got[[1]], "fmalloc_unsupported")
  expect_match(res$got[[2]], "package 'stats4', which is not loaded", fixed = TRUE)
  expect_false(res$after)
  expect_true(res$global)
})

test_that("fmalloc_ls() is the data frame data.frame() makes, for every kind of object and a damaged one", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.02)
  on.exit(suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned"))
  fmalloc_save(as.double(1:10), "dbl", heap)
  fmalloc_save(1:5, "int", heap)
  fmalloc_save(c(TRUE, NA), "lgl", heap)
  fmalloc_save(complex(real = 1, imaginary = 2), "cplx", heap)
  fmalloc_save(as.raw(1:3), "raw", heap)
  fmalloc_save(c("a", NA, "\u00e9"), "chr", heap)
  fmalloc_save(factor(c("u", "v")), "fct", heap)
  fmalloc_save(as.Date("2024-01-01") + 0:2, "date", heap)
  fmalloc_save(as.POSIXct("2024-01-01", tz = "UTC") + 1:3, "posix", heap)
  fmalloc_save(matrix(1:6, 2), "mat", heap)
  fmalloc_save(array(1:24, 2:4), "arr", heap)
  fmalloc_save(data.frame(a = 1:3, b = c("x", "y", "z")), "df", heap)
  fmalloc_save(list(1, "a", list(2)), "lst", heap)
  fmalloc_save(double(0), "empty", heap)
  fmalloc_save(double(1e6), "million", heap)
  # A summary claiming 3e9 elements: the length column is then double.
  fmalloc_save(1:3, "big", heap)
  Rfmalloc:::fmalloc_named_put_raw_meta(heap, "big", hostile_meta(node(0),
    summary = hostile_summary("double", "numeric", 3e9)))
  # A summary that cannot be read: NA fields, status says why.
  fmalloc_save(1:3, "zdamaged", heap)
  Rfmalloc:::fmalloc_named_put_raw_meta(heap, "zdamaged",
    c(charToRaw("RFMN"), u32(2), u32(2^32 - 1), node(0)))
  ls <- fmalloc_ls(heap)
  # What the listing was built with before (data.frame() of the columns,
  # lengths and bytes integer when they all fit): identical, attribute
  # order included.
  as_int <- function(x) if (all(is.na(x) | x <= .Machine$integer.max)) as.integer(x) else x
  expected <- data.frame(
    name = ls$name, type = ls$type, class = ls$class,
    length = as_int(as.numeric(ls$length)), dim = ls$dim,
    bytes = as_int(as.numeric(ls$bytes)),
    created = .POSIXct(unclass(ls$created)), modified = .POSIXct(unclass(ls$modified)),
    status = ls$status, stringsAsFactors = FALSE
  )
  class(expected) <- c("fmalloc_ls", "data.frame")
  expect_identical(ls, expected)
  expect_true(identical(ls, expected, attrib.as.set = FALSE))
  expect_identical(ls$name, c("arr", "big", "chr", "cplx", "date", "dbl", "df", "empty",
    "fct", "int", "lgl", "lst", "mat", "million", "posix", "raw", "zdamaged"))
  expect_identical(ls$type, c("integer", "double", "character", "complex", "double", "double",
    "list", "double", "integer", "integer", "logical", "list", "integer", "double", "double",
    "raw", NA))
  expect_identical(ls$class[c(5, 7, 9, 13, 15, 17)],
    c("Date", "data.frame", "factor", "matrix/array", "POSIXct/POSIXt", NA))
  expect_identical(ls$length, c(24, 3e9, 3, 1, 3, 10, 3, 0, 2, 5, 2, 3, 6, 1e6, 3, 3, NA))
  expect_identical(ls$dim[c(1, 7, 13, 2)], c("2x3x4", "3x2", "2x3", NA))
  expect_identical(ls$bytes[c(1, 6, 14)], c(96L, 80L, 8000000L))
  expect_identical(ls$status[17], "damaged: bad summary length")
  expect_identical(unique(ls$status[-17]), "ok")
  # Without the huge one, lengths are integer; printing shows no e-notation.
  fmalloc_rm("big", heap)
  ls <- fmalloc_ls(heap)
  expect_type(ls$length, "integer")
  expect_true(any(grepl("1000000", capture.output(print(ls)), fixed = TRUE)))
  # An empty heap lists zero rows with the same columns and types.
  for (name in ls$name) fmalloc_rm(name, heap)
  empty <- fmalloc_ls(heap)
  none <- data.frame(
    name = character(), type = character(), class = character(), length = integer(),
    dim = character(), bytes = integer(), created = .POSIXct(double()),
    modified = .POSIXct(double()), status = character(), stringsAsFactors = FALSE
  )
  class(none) <- c("fmalloc_ls", "data.frame")
  expect_identical(empty, none)
  expect_true(identical(empty, none, attrib.as.set = FALSE))
})

test_that("a summary whose text holds a NUL byte lists as damaged, not as an error", {
  heap <- local_heap()
  fmalloc_save(1:3, "good", heap)
  fmalloc_save(1:3, "nul", heap)
  text <- as.raw(c(0x61, 0x00, 0x62))
  summary <- c(u16(3), text, u32(7), charToRaw("integer"), f64(3), as.raw(0))
  Rfmalloc:::fmalloc_named_put_raw_meta(heap, "nul", hostile_meta(node(0), summary = summary))
  ls <- fmalloc_ls(heap)
  expect_identical(ls$name, c("good", "nul"))
  expect_identical(ls$status, c("ok", "damaged: summary text holds a NUL byte"))
  expect_identical(ls$type, c("integer", NA))
  expect_identical(ls$length, c(3L, NA))
  expect_identical(ls$bytes, c(12L, NA))
  # fmalloc_check() reports what fmalloc_ls() calls damaged.
  problems <- fmalloc_check(heap)
  expect_identical(problems$object, "nul")
  expect_match(problems$problem, "summary text holds a NUL byte", fixed = TRUE)
})

test_that("a summary length that is not a whole number in [0, 2^52] is damaged, in ls and check", {
  heap <- local_heap()
  fmalloc_save(1:3, "good", heap)
  for (len in c(1e300, 2.5, 2^53 + 2, 2^52 + 1)) {
    fmalloc_save(1:3, "zbad", heap, overwrite = TRUE)
    Rfmalloc:::fmalloc_named_put_raw_meta(heap, "zbad", hostile_meta(node(0),
      summary = hostile_summary("integer", "integer", len)))
    ls <- fmalloc_ls(heap)
    shown <- c("1e300", "2.5", "9007199254740994", "4503599627370497")[
      match(len, c(1e300, 2.5, 2^53 + 2, 2^52 + 1))]
    expect_identical(ls$status[2], paste0("damaged: summary length ", shown,
      " is not a whole number in [0, 2^52]"), info = len)
    expect_identical(ls$length, c(3L, NA), info = len)
    expect_identical(ls$bytes, c(12L, NA), info = len)
    problems <- fmalloc_check(heap)
    expect_identical(problems$object, "zbad", info = len)
    expect_match(problems$problem, "not a whole number", fixed = TRUE, info = len)
    expect_fmalloc_error(fmalloc_get("zbad", heap), "fmalloc_corrupt", "whole number")
  }
  # 2^52 itself (R's longest vector) lists, as a double printed in full.
  Rfmalloc:::fmalloc_named_put_raw_meta(heap, "zbad", hostile_meta(node(0),
    summary = hostile_summary("integer", "integer", 2^52)))
  ls <- fmalloc_ls(heap)
  expect_identical(ls$status, c("ok", "ok"))
  expect_identical(ls$length, c(3, 2^52))
  expect_true(any(grepl("4503599627370496", capture.output(print(ls)), fixed = TRUE)))
})
