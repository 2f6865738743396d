# Named objects within one session: save, get, list, remove, rename, and
# what cannot be stored. The cross-session guarantees are in
# test-named-sessions.R, the cross-process ones in test-process.R.

test_that("fmalloc_get returns an identical object backed by the heap", {
  heap <- local_heap()
  x <- c(a = 1.5, b = NA, c = -Inf)
  back <- fmalloc_save(x, "x", heap)
  expect_identical(back, x)
  got <- fmalloc_get("x", heap)
  expect_identical(got, x)
  expect_true(is_fmalloc(got))
  expect_true(is_fmalloc(back))
  expect_false(is_fmalloc(x))
})

test_that("every supported vector type round-trips with its attributes", {
  heap <- local_heap()
  objects <- list(
    lgl = c(TRUE, NA, FALSE),
    int = structure(1:6, dim = 2:3, dimnames = list(c("r1", "r2"), c("a", "b", "c"))),
    dbl = c(x = pi, y = NaN, z = NA),
    cplx = complex(real = 1:3, imaginary = c(-1, 0, NA)),
    raw = as.raw(c(0, 127, 255)),
    chr = c("a", NA, "\u00e9t\u00e9", ""),
    fct = factor(c("lo", "hi", NA, "lo"), levels = c("lo", "hi")),
    date = as.Date(c("2024-02-29", NA)),
    time = as.POSIXct(c("2024-01-01 12:00:00", "2024-06-01 00:00:01"), tz = "Pacific/Auckland"),
    dt = as.difftime(c(1.5, 30), units = "mins"),
    commented = structure(1:3, comment = "three numbers", custom = list(k = "v")),
    array = array(as.double(1:24), dim = 2:4, dimnames = list(NULL, letters[1:3], NULL)),
    compact = 1:1e5, # an ALTREP sequence of base R: copied as its values
    long_names = setNames(1:5000, paste0("n", 1:5000)) # names stored as a vector of their own
  )
  for (nm in names(objects)) {
    fmalloc_save(objects[[nm]], nm, heap)
  }
  for (nm in names(objects)) {
    expect_identical(fmalloc_get(nm, heap), objects[[nm]], label = nm)
  }
})

test_that("data frames and nested lists round-trip, each vector in the heap", {
  heap <- local_heap()
  df <- data.frame(
    id = 1:4, price = c(1.5, 2.25, NA, 4), item = c("a", "b", NA, "d"),
    kind = factor(c("x", "y", "x", "y")), row.names = c("w", "x", "y", "z")
  )
  nested <- list(df = df, meta = list(note = "n", when = as.Date("2024-01-01"), empty = list()),
                 nothing = NULL, int0 = integer(0))
  fmalloc_save(df, "df", heap)
  fmalloc_save(nested, "nested", heap)

  got <- fmalloc_get("df", heap)
  expect_identical(got, df)
  expect_true(all(vapply(got, is_fmalloc, NA)))
  got <- fmalloc_get("nested", heap)
  expect_identical(got, nested)
  expect_true(is_fmalloc(got$df$price))
  expect_true(is_fmalloc(got$meta$when))
})

test_that("objects that cannot be stored name the part and write nothing", {
  heap <- local_heap()
  before <- fmalloc_info(heap)
  bad <- list(a = list(ok = 1:10, f = function(x) x), b = 1)
  err <- expect_fmalloc_error(fmalloc_save(bad, "bad", heap), "fmalloc_unsupported")
  expect_match(conditionMessage(err), "bad$a$f", fixed = TRUE)
  expect_match(conditionMessage(err), "a function")

  expect_fmalloc_error(fmalloc_save(new.env(), "e", heap), "fmalloc_unsupported", "an environment")
  expect_fmalloc_error(fmalloc_save(quote(a + b), "q", heap), "fmalloc_unsupported", "call")
  expect_fmalloc_error(
    fmalloc_save(structure(1:3, handler = new.env()), "attr", heap),
    "fmalloc_unsupported", "attr\\(.*handler"
  )
  expect_fmalloc_error(
    fmalloc_save(data.frame(a = 1:2, f = I(list(sum, mean))), "dflist", heap),
    "fmalloc_unsupported", "\\$f\\[\\[1\\]\\]"
  )

  after <- fmalloc_info(heap)
  expect_identical(after$objects, 0)
  expect_identical(after$used, before$used)
  expect_identical(nrow(fmalloc_ls(heap)), 0L)
})

test_that("fmalloc_save's errors name the expression saved and come from the user's call", {
  heap <- local_heap()
  expect_fmalloc_error(fmalloc_save(list(f = mean), "l", heap), "fmalloc_unsupported",
                       "list(f = mean)$f", fixed = TRUE)
  expect_fmalloc_error(
    fmalloc_save(list(a_rather_long_name = 1, another_long_name = 2, f = sum), "l", heap),
    "fmalloc_unsupported", "cannot store x$f:", fixed = TRUE
  )
  `odd name` <- list(f = sum)
  expect_fmalloc_error(fmalloc_save(`odd name`, "l", heap), "fmalloc_unsupported",
                       "cannot store odd name$f:", fixed = TRUE)
  a_variable_whose_name_is_longer_than_forty <- list(f = sum)
  expect_fmalloc_error(fmalloc_save(a_variable_whose_name_is_longer_than_forty, "l", heap),
                       "fmalloc_unsupported", "cannot store x$f:", fixed = TRUE)
  fmalloc_save(1:3, "v", heap)
  err <- expect_fmalloc_error(fmalloc_save(4:6, "v", heap), "fmalloc_exists")
  expect_identical(err$call, quote(fmalloc_save(4:6, "v", heap)))
  err <- expect_fmalloc_error(fmalloc_save(list(f = sum), "v", heap, overwrite = TRUE),
                              "fmalloc_unsupported")
  expect_identical(err$call, quote(fmalloc_save(list(f = sum), "v", heap, overwrite = TRUE)))
  expect_identical(fmalloc_get("v", heap), 1:3)
})

test_that("plain vectors skip the walk but are described as the walk would", {
  # .fm_decompose() takes a short path for atomic vectors without
  # attributes (saving many small objects is R-bound); its node table must
  # be the one the general walk makes.
  plain <- list(
    1:3, c(1.5, NA, -Inf), c(TRUE, NA), c("a", NA, "\u00e9"), as.raw(0:255),
    complex(real = 1, imaginary = -1), 1:1e5, integer(), double(), character(),
    logical(), raw(), complex(), asS4(c(1, 2))
  )
  for (k in seq_along(plain)) {
    x <- plain[[k]]
    expect_identical(Rfmalloc:::.fm_decompose(x), Rfmalloc:::.fm_decompose_walk(x), label = k)
  }
})

test_that("plain vectors saved in a batch read back in a new process, in-place writes included", {
  skip_if_not_installed("callr")
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.05)
  objects <- list(
    int = 1:3, dbl = c(1.5, NA, -Inf), lgl = c(TRUE, NA), chr = c("a", NA, "\u00e9"),
    raw = as.raw(0:255), cplx = complex(real = 1, imaginary = -1), empty_dbl = double(),
    empty_chr = character(), s4 = asS4(c(1, 2))
  )
  back <- NULL
  fmalloc_batch(heap, {
    for (nm in names(objects)) fmalloc_save(objects[[nm]], nm, heap)
    for (i in 1:500) fmalloc_save(double(100) + i, sprintf("obj%06d", i), heap)
    back <- fmalloc_save(c(1, 2, 3), "written", heap)
  })
  back[2] <- 20 # the value fmalloc_save returned writes into the file
  expect_true(is_fmalloc(back))
  rm(back)
  invisible(gc())
  fmalloc_close(heap)
  got <- callr::r(function(path) {
    heap <- Rfmalloc::fmalloc_open(path, readonly = TRUE)
    nms <- Rfmalloc::fmalloc_ls(heap)$name
    list(
      names = nms,
      values = lapply(setNames(nms, nms), Rfmalloc::fmalloc_get, heap = heap)
    )
  }, args = list(path = path), libpath = .libPaths())
  expect_identical(length(got$names), length(objects) + 501L)
  for (nm in names(objects)) expect_identical(got$values[[nm]], objects[[nm]], label = nm)
  expect_identical(got$values$obj000001, double(100) + 1)
  expect_identical(got$values$obj000500, double(100) + 500)
  expect_identical(got$values$written, c(1, 20, 3))
})

test_that("saving over an existing name needs overwrite = TRUE", {
  heap <- local_heap()
  fmalloc_save(1:3, "v", heap)
  expect_fmalloc_error(fmalloc_save(4:6, "v", heap), "fmalloc_exists", "'v'")
  expect_identical(fmalloc_get("v", heap), 1:3)
  fmalloc_save(c("now", "text"), "v", heap, overwrite = TRUE)
  expect_identical(fmalloc_get("v", heap), c("now", "text"))
})

test_that("missing names and bad arguments are classed errors", {
  heap <- local_heap()
  expect_fmalloc_error(fmalloc_get("nope", heap), "fmalloc_not_found", "'nope'")
  expect_fmalloc_error(fmalloc_rm("nope", heap), "fmalloc_not_found")
  expect_fmalloc_error(fmalloc_rename("nope", "b", heap), "fmalloc_not_found")
  expect_fmalloc_error(fmalloc_save(1, NA_character_, heap), "fmalloc_invalid", "`name`")
  expect_fmalloc_error(fmalloc_save(1, "", heap), "fmalloc_invalid")
  expect_fmalloc_error(fmalloc_get(c("a", "b"), heap), "fmalloc_invalid")
  expect_fmalloc_error(fmalloc_save(1, "x", heap = "heap.bin"), "fmalloc_invalid", "heap handle")
  expect_fmalloc_error(fmalloc_save(1, "x", heap, overwrite = NA), "fmalloc_invalid")
})

test_that("fmalloc_ls describes every object", {
  heap <- local_heap()
  empty <- fmalloc_ls(heap)
  expect_identical(names(empty), c("name", "type", "class", "length", "dim", "bytes", "created", "modified", "status"))
  expect_identical(nrow(empty), 0L)

  t0 <- Sys.time() - 1
  fmalloc_save(matrix(1:6, 2), "m", heap)
  fmalloc_save(data.frame(a = 1:5, b = as.double(1:5)), "df", heap)
  fmalloc_save(factor(c("a", "b")), "f", heap)
  ls <- fmalloc_ls(heap)
  expect_identical(ls$name, c("df", "f", "m"))
  expect_identical(ls$type, c("list", "integer", "integer"))
  expect_identical(ls$class, c("data.frame", "factor", "matrix/array"))
  expect_identical(ls$length, c(5L, 2L, 6L))
  expect_identical(ls$dim, c("5x2", NA, "2x3"))
  expect_identical(ls$bytes, c(5L * 4L + 5L * 8L, 2L * 4L, 6L * 4L))
  expect_s3_class(ls$created, "POSIXct")
  expect_true(all(ls$created >= t0 & ls$created <= Sys.time() + 1))
  expect_true(all(ls$modified >= ls$created))
})

test_that("fmalloc_ls prints lengths and bytes as whole numbers, and keeps lengths past 2^31", {
  heap <- local_heap()
  fmalloc_save(1:3, "small", heap)
  fmalloc_save(seq_len(1e6), "million", heap)
  ls <- fmalloc_ls(heap)
  expect_identical(ls$length, c(1000000L, 3L))
  expect_identical(ls$bytes, c(4000000L, 12L)) # integer: prints 4000000, not 4e+06
  out <- capture.output(print(ls[c("name", "length", "bytes")]))
  expect_match(out[2], "million 1000000 4000000", fixed = TRUE)
  expect_match(out[3], "small       3", fixed = TRUE)

  # An entry describing a long vector (2^31 + 10 elements); only its summary
  # is read by fmalloc_ls().
  parts <- Rfmalloc:::.fm_decompose(1:2)
  parts$desc$summary$length <- 2^31 + 10
  Rfmalloc:::fmalloc_named_save(heap, "long", parts$desc, parts$leaves, FALSE)
  ls <- fmalloc_ls(heap)
  expect_identical(ls$length, c(2^31 + 10, 1e6, 3))
  out <- capture.output(print(ls[c("name", "length")]))
  expect_match(out[2], "long 2147483658", fixed = TRUE)
  expect_match(out[3], "million    1000000", fixed = TRUE)
})

test_that("fmalloc_rename and fmalloc_exists", {
  heap <- local_heap()
  fmalloc_save(letters, "a", heap)
  fmalloc_save(1:2, "b", heap)
  expect_true(fmalloc_exists("a", heap))
  expect_fmalloc_error(fmalloc_rename("a", "b", heap), "fmalloc_exists")
  fmalloc_rename("a", "c", heap)
  expect_false(fmalloc_exists("a", heap))
  expect_identical(fmalloc_get("c", heap), letters)
  fmalloc_rename("c", "b", heap, overwrite = TRUE)
  expect_identical(fmalloc_get("b", heap), letters)
  expect_identical(fmalloc_ls(heap)$name, "b")
})

test_that("fmalloc_rm frees the space; vectors in use stay valid", {
  heap <- local_heap(size_gb = 0.05)
  used0 <- fmalloc_info(heap)$used
  fmalloc_save(as.double(1:1e6), "big", heap)
  expect_gte(fmalloc_info(heap)$used - used0, 8e6)

  live <- fmalloc_get("big", heap)
  fmalloc_rm("big", heap)
  expect_false(fmalloc_exists("big", heap))
  expect_identical(sum(live), sum(as.double(1:1e6)))
  live[1] <- -1
  expect_identical(live[1:2], c(-1, 2))

  rm(live)
  invisible(gc())
  expect_lt(fmalloc_info(heap)$used - used0, 1e6)
})

test_that("in-place writes to a got vector land in the named object", {
  heap <- local_heap()
  fmalloc_save(c(1, 2, 3), "v", heap)
  v <- fmalloc_get("v", heap)
  v[2] <- 20
  expect_identical(fmalloc_get("v", heap), c(1, 20, 3))

  df <- fmalloc_get("v", heap)
  w <- df
  w[1] <- 100 # shared: R copies, the heap is unchanged
  expect_identical(fmalloc_get("v", heap), c(1, 20, 3))
})

test_that("naming a vector already in the heap copies nothing", {
  heap <- local_heap(size_gb = 0.05)
  for (method in methods) {
    v <- create_fmalloc_vector("double", 1e6, heap = heap, method = method)
    v[1:3] <- c(1, 2, 3)
    used <- fmalloc_info(heap)$used
    back <- fmalloc_save(v, paste0("v_", method), heap)
    expect_lt(fmalloc_info(heap)$used - used, 1e5, label = method)
    # Same data: an in-place write through the returned object lands in
    # the named object and shows in the original vector.
    back[4] <- 4
    expect_true(is_fmalloc(back))
    expect_identical(fmalloc_get(paste0("v_", method), heap)[1:4], c(1, 2, 3, 4))
    expect_identical(v[1:4], c(1, 2, 3, 4))
  }
  # The classic vector's own R object can go away; its named data stay.
  rm(v, back)
  invisible(gc())
  skip_if_no_classic()
  expect_identical(fmalloc_get("v_classic", heap)[1:4], c(1, 2, 3, 4))
})

test_that("create_fmalloc_vector(name =) creates a named vector", {
  heap <- local_heap()
  v <- create_fmalloc_vector("integer", 5, heap = heap, name = "counts")
  v[2] <- 7L
  expect_identical(fmalloc_get("counts", heap), c(0L, 7L, 0L, 0L, 0L))
  expect_identical(fmalloc_ls(heap)$name, "counts")
})

test_that("a damaged meta blob is an fmalloc_corrupt error", {
  heap <- local_heap()
  fmalloc_save(1:3, "x", heap)
  meta <- Rfmalloc:::fmalloc_named_raw_meta(heap, "x")
  put <- function(m) Rfmalloc:::fmalloc_named_put_raw_meta(heap, "x", m)
  put(as.raw(1:40))
  expect_fmalloc_error(fmalloc_get("x", heap), "fmalloc_corrupt", "'x'")
  bad <- meta
  bad[5] <- as.raw(9)
  put(bad)
  expect_fmalloc_error(fmalloc_get("x", heap), "fmalloc_corrupt", "version 9")
  bad <- meta
  bad[9:12] <- as.raw(255)
  put(bad)
  expect_fmalloc_error(fmalloc_get("x", heap), "fmalloc_corrupt", "summary length")
  put(meta[seq_len(length(meta) - 2L)])
  expect_fmalloc_error(fmalloc_get("x", heap), "fmalloc_corrupt", "truncated")
  put(meta)
  expect_identical(fmalloc_get("x", heap), 1:3)
})

test_that("in-place writes reach the file for matrices, list and data frame columns", {
  heap <- local_heap()
  m <- fmalloc_save(matrix(as.double(1:6), 2), "m", heap)
  m[2, 2] <- 40
  expect_identical(fmalloc_get("m", heap)[2, 2], 40)
  m <- fmalloc_get("m", heap)
  m[1, 3] <- 50
  expect_identical(fmalloc_get("m", heap)[1, 3], 50)

  fmalloc_save(list(a = c(1, 2, 3), b = "x"), "l", heap)
  l <- fmalloc_get("l", heap)
  l$a[2] <- 20
  expect_identical(fmalloc_get("l", heap)$a, c(1, 20, 3))

  fmalloc_save(data.frame(a = c(1, 2, 3), f = factor(c("u", "v", "u"))), "df", heap)
  d <- fmalloc_get("df", heap)
  d$a[3] <- 30
  expect_identical(fmalloc_get("df", heap)$a, c(1, 2, 30))
  expect_true(is_fmalloc(d$a))

  # Inside a function too.
  f <- function() {
    v <- fmalloc_get("m", heap)
    v[1] <- -1
    invisible(NULL)
  }
  f()
  expect_identical(fmalloc_get("m", heap)[1, 1], -1)
})

test_that("element writes to a named character vector persist", {
  heap <- local_heap()
  fmalloc_save(c("a", "b", NA), "s", heap)
  s <- fmalloc_get("s", heap)
  s[1] <- "z"
  s[3] <- "caf\u00e9 au lait" # longer: uses the pool's spare room
  s[2] <- NA
  expect_identical(fmalloc_get("s", heap), c("z", NA, "caf\u00e9 au lait"))
  # Beyond the spare room the pool moves to a bigger block, and the named
  # object follows it.
  long <- strrep("x", 1e5)
  s[2] <- long
  expect_identical(fmalloc_get("s", heap), c("z", long, "caf\u00e9 au lait"))
  for (i in 1:20) s[1] <- strrep("y", 1000 * i) # garbage: the pool is compacted
  s[1] <- "short"
  expect_identical(fmalloc_get("s", heap), c("short", long, "caf\u00e9 au lait"))
  expect_identical(fmalloc_ls(heap)$name, "s")
  expect_lt(fmalloc_info(heap)$used, 1e6)
})

test_that("a stored structure that does not match its blocks is fmalloc_corrupt", {
  heap <- local_heap()
  fmalloc_save(c(1, 2), "v", heap)
  meta_of <- function(x) {
    scratch <- local_heap()
    fmalloc_save(x, "tmp", scratch)
    Rfmalloc:::fmalloc_named_raw_meta(scratch, "tmp")
  }
  put <- function(m) Rfmalloc:::fmalloc_named_put_raw_meta(heap, "v", m)
  good <- Rfmalloc:::fmalloc_named_raw_meta(heap, "v")
  cases <- list(
    two_leaves = meta_of(list(1, 2)),          # 2 leaves, 1 block
    no_leaf = meta_of(list()),                 # the block is not used
    wrong_type = meta_of(1:2),                 # the block holds doubles
    dim_mismatch = meta_of(matrix(c(1, 2, 3), 3)) # dim 3x1 on 2 values: checked first
  )
  for (nm in names(cases)) {
    put(cases[[nm]])
    err <- expect_fmalloc_error(fmalloc_get("v", heap), "fmalloc_corrupt", "object 'v'")
    expect_false(grepl("dims", conditionMessage(err)))
  }
  put(good)
  expect_identical(fmalloc_get("v", heap), c(1, 2))
})

test_that("names marked as bytes round-trip in lists and data frames", {
  heap <- local_heap()
  b <- "\xff\xfeab"
  Encoding(b) <- "bytes"
  # Lists and data frames were R's unclassed error from make.names()
  # ("translating strings with \"bytes\" encoding is not allowed").
  for (x in list(setNames(1, b), setNames(list(1, "a"), c(b, "ok")),
                 list(inner = setNames(list(2L), b)),
                 structure(list(1:2), names = b, class = "data.frame", row.names = 1:2))) {
    fmalloc_save(x, "x", heap, overwrite = TRUE)
    got <- fmalloc_get("x", heap)
    expect_identical(got, x)
  }
  expect_identical(Encoding(names(fmalloc_get("x", heap))), "bytes")
})

test_that("S4 objects round-trip when their slots can be stored", {
  heap <- local_heap()
  env <- environment()
  methods::setClass("FmPoint", representation(x = "numeric", label = "character"), where = env)
  methods::setClass("FmTagged", contains = "numeric", representation(tag = "character"), where = env)
  methods::setClass("FmHandle", representation(e = "environment"), where = env)

  p <- methods::new("FmPoint", x = c(1.5, 2.5), label = "p")
  fmalloc_save(p, "p", heap)
  expect_identical(fmalloc_get("p", heap), p)

  tagged <- methods::new("FmTagged", as.double(1:10), tag = "t")
  fmalloc_save(tagged, "tagged", heap)
  got <- fmalloc_get("tagged", heap)
  expect_identical(got, tagged)
  expect_true(isS4(got))
  expect_true(is_fmalloc(got)) # the data part is in the heap

  h <- methods::new("FmHandle", e = new.env())
  expect_fmalloc_error(fmalloc_save(h, "h", heap), "fmalloc_unsupported", "environment")
  expect_false(fmalloc_exists("h", heap))

  # As a list element an S4 object is an object; as an attribute's value
  # (kept by value) it is refused, saying so (was "an S4 object with slots
  # that cannot be stored", of a point whose slots were just stored).
  fmalloc_save(list(a = p), "in_list", heap)
  expect_identical(fmalloc_get("in_list", heap), list(a = p))
  x <- structure(1:3, point = p)
  err <- expect_fmalloc_error(fmalloc_save(x, "attr", heap), "fmalloc_unsupported")
  expect_match(conditionMessage(err), 'attr(x, "point"): it is an S4 object in the value of an attribute', fixed = TRUE)
  err <- expect_fmalloc_error(fmalloc_save(structure(1:3, obj = list(p)), "attr", heap), "fmalloc_unsupported")
  expect_match(conditionMessage(err), "not inside an attribute", fixed = TRUE)
  expect_false(fmalloc_exists("attr", heap))
})

test_that("objects whose stored meta is damaged give fmalloc_corrupt, and are still listed", {
  heap <- local_heap()
  fmalloc_save(1:3, "good", heap)
  put <- function(name, meta) Rfmalloc:::fmalloc_named_put_raw_meta(heap, name, meta)
  meta_of <- function(x) {
    scratch <- local_heap()
    fmalloc_save(x, "tmp", scratch)
    Rfmalloc:::fmalloc_named_raw_meta(scratch, "tmp")
  }
  put("garbage", as.raw(1:50))
  # A valid header and summary, but a structure naming a leaf that has no block.
  put("dangling", meta_of(list(1L, 2L)))
  # Leaf types that contradict the blocks.
  fmalloc_save(7:9, "mistyped", heap)
  put("mistyped", meta_of(c(7, 8, 9)))

  for (nm in c("garbage", "dangling", "mistyped")) {
    err <- expect_fmalloc_error(fmalloc_get(nm, heap), "fmalloc_corrupt")
    expect_match(conditionMessage(err), nm, fixed = TRUE)
  }
  ls <- fmalloc_ls(heap)
  expect_identical(ls$name, c("dangling", "garbage", "good", "mistyped"))
  expect_identical(ls$type[ls$name == "garbage"], NA_character_)
  expect_identical(fmalloc_get("good", heap), 1:3)
})

test_that("object names in any marked encoding are stored as UTF-8", {
  heap <- local_heap()
  latin1 <- iconv("\u00e9t\u00e9", "UTF-8", "latin1")
  Encoding(latin1) <- "latin1"
  fmalloc_save(1:3, latin1, heap) # was "an object name must not be empty"
  expect_identical(fmalloc_get("\u00e9t\u00e9", heap)[], 1:3)
  expect_identical(fmalloc_get(latin1, heap)[], 1:3)
  expect_true(fmalloc_exists(latin1, heap))
  expect_identical(fmalloc_ls(heap)$name, "\u00e9t\u00e9")
  bytes <- "caf\xe9"
  Encoding(bytes) <- "bytes"
  expect_fmalloc_error(fmalloc_save(1, bytes, heap), "fmalloc_invalid", "bytes")
})

test_that("a name with bytes invalid in a UTF-8 session is refused, not escaped", {
  skip_if_not(isTRUE(l10n_info()[["UTF-8"]]), "needs a UTF-8 session")
  heap <- local_heap()
  local(fmalloc_save("first", "bad<c3>(", heap))
  bad <- "bad\xc3("
  # enc2utf8() escapes the byte: the name was taken for "bad<c3>(".
  expect_fmalloc_error(fmalloc_exists(bad, heap), "fmalloc_invalid", "not valid text")
  expect_fmalloc_error(fmalloc_get(bad, heap), "fmalloc_invalid", "not valid text")
  expect_fmalloc_error(fmalloc_save("second", bad, heap, overwrite = TRUE), "fmalloc_invalid")
  expect_identical(fmalloc_get("bad<c3>(", heap, copy = TRUE), "first")
  expect_identical(fmalloc_ls(heap)$name, "bad<c3>(")
})
