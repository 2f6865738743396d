# Batches (fmalloc_batch) and durability (fmalloc_open(sync = )).

test_that("a batch is one commit: its changes are seen inside, and after it", {
  heap <- local_heap()
  fmalloc_save(1:3, "keep", heap)
  fmalloc_save(4:6, "old", heap)
  value <- fmalloc_batch(heap, {
    for (i in 1:50) fmalloc_save(i * 1.5, sprintf("x%02d", i), heap)
    fmalloc_rm("old", heap)
    fmalloc_rename("x01", "first", heap)
    # Reads inside the batch see its changes.
    expect_false(fmalloc_exists("old", heap))
    expect_identical(fmalloc_get("first", heap), 1.5)
    expect_identical(nrow(fmalloc_ls(heap)), 51L)
    "done"
  })
  expect_identical(value, "done")
  expect_identical(nrow(fmalloc_ls(heap)), 51L)
  expect_identical(fmalloc_get("x50", heap), 75)
  expect_false(fmalloc_exists("old", heap))
  expect_identical(fmalloc_check(heap)$problem, character())
})

test_that("an error inside a batch rolls all of its changes back", {
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(1:3, "keep", heap)
  fmalloc_save(c(a = 1), "old", heap)
  used <- fmalloc_info(heap)$used
  err <- expect_error(fmalloc_batch(heap, {
    for (i in 1:20) fmalloc_save(runif(100), paste0("y", i), heap)
    fmalloc_rm("keep", heap)
    fmalloc_rename("old", "renamed", heap)
    stop("boom")
  }), "boom")
  # The error names the user's call, not the batch's internals.
  expect_identical(conditionCall(err)[[1]], quote(fmalloc_batch))
  expect_s3_class(err, "simpleError")
  # So does a warning, which fails nothing: the batch commits.
  w <- expect_warning(fmalloc_batch(heap, {
    fmalloc_save(1, "warned", heap)
    warning("check the input")
  }), "check the input")
  expect_identical(conditionCall(w)[[1]], quote(fmalloc_batch))
  expect_true(fmalloc_exists("warned", heap))
  fmalloc_rm("warned", heap)
  expect_identical(fmalloc_ls(heap)$name, c("keep", "old"))
  expect_identical(fmalloc_get("keep", heap), 1:3)
  expect_identical(fmalloc_get("old", heap), c(a = 1))
  invisible(gc())
  # The space the rolled-back objects took is free again.
  expect_lte(fmalloc_info(heap)$used, used)
  expect_identical(fmalloc_check(heap)$problem, character())
  # A failing call inside the batch rolls it back too.
  expect_fmalloc_error(fmalloc_batch(heap, {
    fmalloc_save(1, "z", heap)
    fmalloc_save(2, "keep", heap) # exists: fmalloc_exists
  }), "fmalloc_exists")
  expect_false(fmalloc_exists("z", heap))
  # Nested batches commit with the outermost one.
  fmalloc_batch(heap, {
    fmalloc_batch(heap, fmalloc_save(1, "inner", heap))
    fmalloc_save(2, "outer", heap)
  })
  fmalloc_close(heap)
  invisible(gc())
  heap <- fmalloc_open(path, readonly = TRUE)
  on.exit(fmalloc_close(heap))
  expect_identical(fmalloc_ls(heap)$name, c("inner", "keep", "old", "outer"))
})

test_that("a batch left by return() or break commits; an error caught inside it does not roll back", {
  heap <- local_heap()
  f <- function() {
    fmalloc_batch(heap, {
      fmalloc_save(1, "a", heap)
      return("early")
    })
    "late"
  }
  expect_identical(f(), "early")
  for (i in 1:3) {
    fmalloc_batch(heap, {
      fmalloc_save(i, paste0("b", i), heap)
      if (i == 2) break
    })
  }
  fmalloc_batch(heap, {
    fmalloc_save(3, "c", heap)
    try(stop("handled inside"), silent = TRUE)
    tryCatch(fmalloc_get("nothing", heap), fmalloc_error = function(e) NULL)
  })
  expect_identical(fmalloc_ls(heap)$name, c("a", "b1", "b2", "c"))
  # Caught outside the batch: rolled back.
  tryCatch(fmalloc_batch(heap, {
    fmalloc_save(4, "d", heap)
    stop("boom")
  }), error = function(e) NULL)
  expect_false(fmalloc_exists("d", heap))
  expect_identical(fmalloc_check(heap)$problem, character())
})

test_that("sync must be \"commit\" or \"none\"", {
  path <- local_heap_path()
  expect_fmalloc_error(fmalloc_open(path, sync = "sometimes"), "fmalloc_invalid", "sync")
  expect_fmalloc_error(fmalloc_open(path, sync = NA_character_), "fmalloc_invalid")
  heap <- fmalloc_open(path, size_gb = 0.01, sync = "none")
  fmalloc_save(1:10, "v", heap)
  fmalloc_sync(heap)
  fmalloc_close(heap)
  invisible(gc())
  heap <- fmalloc_open(path, readonly = TRUE)
  on.exit(fmalloc_close(heap))
  expect_identical(fmalloc_get("v", heap), 1:10)
})

# Starts a writer that runs `body` (with `heap` open on `path`), signals
# `ready` and waits to be killed with SIGKILL (no finalizer, no sync).
killed_writer <- function(path, sync, body) {
  ready <- tempfile("ready-")
  proc <- callr::r_bg(function(path, sync, ready, body) {
    heap <- Rfmalloc::fmalloc_open(path, size_gb = 0.01, sync = sync)
    body(heap, ready)
    Sys.sleep(60)
  }, args = list(path = path, sync = sync, ready = ready, body = body),
  libpath = .libPaths())
  deadline <- Sys.time() + 60
  while (!file.exists(ready) && proc$is_alive() && Sys.time() < deadline) Sys.sleep(0.05)
  expect_true(file.exists(ready))
  proc$kill()
  proc$wait()
  unlink(ready)
}

test_that("kill -9 in the middle of a batch leaves the catalog as before it", {
  skip_if_not_installed("callr")
  skip_on_os("windows")
  path <- local_heap_path()
  killed_writer(path, "commit", function(heap, ready) {
    Rfmalloc::fmalloc_save(1:3, "before", heap)
    Rfmalloc::fmalloc_batch(heap, {
      for (i in 1:200) Rfmalloc::fmalloc_save(as.double(i), paste0("b", i), heap)
      Rfmalloc::fmalloc_rm("before", heap)
      file.create(ready)
      Sys.sleep(60) # killed here, inside the batch
    })
  })
  heap <- fmalloc_open(path)
  on.exit(fmalloc_close(heap))
  expect_identical(fmalloc_ls(heap)$name, "before")
  expect_identical(fmalloc_get("before", heap), 1:3)
  expect_identical(fmalloc_check(heap)$problem, character())
  # The blocks the batch had taken are free again.
  fmalloc_save(2, "after", heap)
})

test_that("kill -9 after unsynced commits and batches loses nothing committed", {
  skip_if_not_installed("callr")
  skip_on_os("windows")
  path <- local_heap_path()
  killed_writer(path, "none", function(heap, ready) {
    for (i in 1:100) Rfmalloc::fmalloc_save(as.double(i), paste0("u", i), heap)
    Rfmalloc::fmalloc_batch(heap, {
      for (i in 1:100) Rfmalloc::fmalloc_save(-as.double(i), paste0("v", i), heap)
    })
    Rfmalloc::fmalloc_rm("u1", heap)
    Rfmalloc::fmalloc_rename("u2", "two", heap)
    file.create(ready)
  })
  # A read-only open of an unsynced commit checks the whole catalog.
  got <- callr::r(function(path) {
    heap <- Rfmalloc::fmalloc_open(path, readonly = TRUE)
    ls <- Rfmalloc::fmalloc_ls(heap)
    list(n = nrow(ls), two = Rfmalloc::fmalloc_get("two", heap),
         v100 = Rfmalloc::fmalloc_get("v100", heap),
         u1 = Rfmalloc::fmalloc_exists("u1", heap))
  }, args = list(path = path), libpath = .libPaths())
  expect_identical(got, list(n = 199L, two = 2, v100 = -100, u1 = FALSE))
  heap <- fmalloc_open(path)
  on.exit(fmalloc_close(heap))
  expect_identical(fmalloc_check(heap)$problem, character())
  expect_identical(nrow(fmalloc_ls(heap)), 199L)
})

test_that("an error after the heap was closed inside a batch is the one the user sees", {
  # Before, the rollback of the closed heap's batch raised its own error,
  # without a class ("<fmalloc_closed> ..."), in place of the user's.
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.01)
  err <- tryCatch(fmalloc_batch(heap, { fmalloc_close(heap); stop("user's error") }),
                  error = function(e) e)
  expect_identical(conditionMessage(err), "user's error")
  # Left by return(): the commit finds the heap closed, a classed error.
  heap <- fmalloc_open(path)
  f <- function() fmalloc_batch(heap, { fmalloc_close(heap); return(1) })
  expect_error(f(), class = "fmalloc_closed")
})

test_that("fmalloc_open(sync =) takes one value", {
  path <- local_heap_path()
  # c("none", "commit") silently meant "none": no flush at any commit.
  err <- expect_error(fmalloc_open(path, size_gb = 0.01, sync = c("none", "commit")),
                      class = "fmalloc_invalid")
  expect_match(conditionMessage(err), "`sync`", fixed = TRUE)
  expect_match(conditionMessage(err), "character vector of length 2", fixed = TRUE)
  expect_error(fmalloc_open(path, size_gb = 0.01, sync = NA_character_), class = "fmalloc_invalid")
  expect_error(fmalloc_open(path, size_gb = 0.01, sync = "n"), class = "fmalloc_invalid")
  expect_false(file.exists(path) && file.size(path) > 0)
})

test_that("closing a batch's handle inside the batch rolls it back; later saves through another handle commit", {
  # The handles of one file share one heap and its batch: the closed
  # handle could not end the batch, so the heap stayed in it, and no later
  # save of the session reached the file (not even after fmalloc_sync()).
  path <- local_heap_path()
  h1 <- fmalloc_open(path, size_gb = 0.01)
  h2 <- fmalloc_open(path)
  expect_fmalloc_error(fmalloc_batch(h1, {
    fmalloc_save(1, "a", h2)
    fmalloc_close(h1)
    fmalloc_save(2, "b", h2)
  }), "fmalloc_closed")
  expect_false(fmalloc_exists("a", h2))
  expect_false(fmalloc_exists("b", h2))
  fmalloc_save(3, "c", h2)
  # An error after the close: rolled back too.
  h1 <- fmalloc_open(path)
  expect_error(fmalloc_batch(h1, { fmalloc_save(4, "d", h2); fmalloc_close(h1); stop("boom") }), "boom")
  expect_false(fmalloc_exists("d", h2))
  fmalloc_save(5, "e", h2)
  fmalloc_close(h2)
  invisible(gc())
  h <- fmalloc_open(path, readonly = TRUE)
  expect_setequal(fmalloc_ls(h)$name, c("c", "e"))
  fmalloc_close(h)
  # The default heap opened again inside a batch on it (init_fmalloc()
  # closes the old handle).
  init_fmalloc(path)
  expect_fmalloc_error(fmalloc_batch(NULL, { fmalloc_save(6, "f"); init_fmalloc(path); fmalloc_save(7, "g") }),
                       "fmalloc_closed")
  fmalloc_save(8, "h")
  cleanup_fmalloc()
  invisible(gc())
  h <- fmalloc_open(path, readonly = TRUE)
  expect_setequal(fmalloc_ls(h)$name, c("c", "e", "h"))
  fmalloc_close(h)
})

test_that("an inner batch rolled back holds the outer batches: no part of them commits", {
  # The rollback of an inner batch undid the outer batch's changes and
  # closed it: outer code that caught the inner error went on outside any
  # batch, its earlier saves silently gone, its later ones committed.
  path <- local_heap_path()
  h <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(0, "before", h)
  err <- expect_fmalloc_error(fmalloc_batch(h, {
    fmalloc_save(1, "a", h)
    try(fmalloc_batch(h, { fmalloc_save(9, "inner", h); stop("inner") }), silent = TRUE)
    expect_false(fmalloc_exists("a", h))
    expect_fmalloc_error(fmalloc_save(2, "b", h), "fmalloc_rolled_back")
    expect_fmalloc_error(fmalloc_rm("before", h), "fmalloc_rolled_back")
  }), "fmalloc_rolled_back")
  expect_match(conditionMessage(err), "nothing of it was committed", fixed = TRUE)
  # Three levels, the innermost rolled back and caught by the middle one.
  expect_fmalloc_error(fmalloc_batch(h, {
    fmalloc_save(1, "a", h)
    fmalloc_batch(h, {
      try(fmalloc_batch(h, stop("innermost")), silent = TRUE)
    })
  }), "fmalloc_rolled_back")
  # Two handles of one file: the same.
  h2 <- fmalloc_open(path)
  expect_fmalloc_error(fmalloc_batch(h, {
    fmalloc_save(1, "a", h)
    try(fmalloc_batch(h2, stop("inner")), silent = TRUE)
  }), "fmalloc_rolled_back")
  fmalloc_close(h2)
  # Afterwards batches and saves work again, and an uncaught inner error
  # rolls back plainly.
  expect_error(fmalloc_batch(h, { fmalloc_save(1, "a", h); fmalloc_batch(h, stop("x")) }), "x")
  fmalloc_batch(h, { fmalloc_save(3, "c", h); fmalloc_batch(h, fmalloc_save(4, "d", h)) })
  fmalloc_save(5, "e", h)
  expect_setequal(fmalloc_ls(h)$name, c("before", "c", "d", "e"))
  fmalloc_close(h)
  invisible(gc())
  h <- fmalloc_open(path, readonly = TRUE)
  expect_setequal(fmalloc_ls(h)$name, c("before", "c", "d", "e"))
  fmalloc_close(h)
})

test_that("a warning that leaves the batch rolls it back; one it goes on after does not", {
  heap <- local_heap()
  withr::with_options(list(warn = 2), {
    expect_error(fmalloc_batch(heap, { fmalloc_save(1, "a", heap); warning("top") }),
                 "converted from warning")
    expect_error(fmalloc_batch(heap, { fmalloc_save(1, "b", heap); (function() warning("in"))() }),
                 "converted from warning")
  })
  expect_false(fmalloc_exists("a", heap))
  expect_false(fmalloc_exists("b", heap))
  # ... unless code in the batch catches that error, as without a batch.
  withr::with_options(list(warn = 2), {
    fmalloc_batch(heap, {
      fmalloc_save(1, "caught", heap)
      r <- try(as.integer("x"), silent = TRUE)
      tryCatch(warning("w"), error = function(e) NULL)
    })
  })
  expect_true(fmalloc_exists("caught", heap))
  fmalloc_rm("caught", heap)
  # A warning condition signalled without warning(): nothing printed, the
  # code goes on, the batch commits (as signalCondition() without a batch).
  # In a script: testthat itself reports such a condition as a warning.
  script <- withr::local_tempfile(fileext = ".R")
  writeLines(c(
    "library(Rfmalloc)",
    "h <- fmalloc_open(tempfile(), size_gb = 0.01)",
    "fmalloc_batch(h, {",
    "  fmalloc_save(1, 'signalled', h)",
    "  signalCondition(simpleWarning('sig w'))",
    "  fmalloc_save(2, 'after', h)",
    "})",
    "cat('names:', fmalloc_ls(h)$name, '\\n')"
  ), script)
  out <- system2(file.path(R.home("bin"), "Rscript"), shQuote(script), stdout = TRUE, stderr = TRUE,
                 env = paste0("R_LIBS=", paste(.libPaths(), collapse = .Platform$path.sep)))
  expect_identical(out, "names: after signalled ")
  # Caught, or made an error, outside the batch: rolled back.
  msg <- tryCatch(fmalloc_batch(heap, {
    fmalloc_save(1, "c", heap)
    (function() warning("inner"))()
    fmalloc_save(2, "c2", heap)
  }), warning = function(w) conditionMessage(w))
  expect_identical(msg, "inner")
  msg <- tryCatch(withCallingHandlers(
    fmalloc_batch(heap, { fmalloc_save(1, "d", heap); warning("w") }),
    warning = function(w) stop("escalated")
  ), error = function(e) conditionMessage(e))
  expect_identical(msg, "escalated")
  expect_false(any(c("c", "c2", "d") %in% fmalloc_ls(heap)$name))
  # Printed later, muffled, or followed by return(): committed, shown once.
  expect_warning(fmalloc_batch(heap, { fmalloc_save(1, "e", heap); warning("later") }), "later")
  suppressWarnings(fmalloc_batch(heap, { fmalloc_save(1, "f", heap); (function() warning("x"))() }))
  g <- function() {
    fmalloc_batch(heap, { fmalloc_save(1, "g", heap); warning("then return"); return("early") })
    "late"
  }
  expect_warning(res <- g(), "then return")
  expect_identical(res, "early")
  expect_identical(fmalloc_ls(heap)$name, c("e", "f", "g"))
})
