# Named vectors shared between processes: writers, readers, forked workers.

run_r <- function(f, ...) callr::r(f, args = list(...), libpath = .libPaths())

# A heap file holding the double vector "v" = c(1, 2, 3, 4), closed again.
local_named_heap <- function(env = parent.frame()) {
  path <- local_heap_path(env)
  heap <- fmalloc_open(path, size_gb = 0.01)
  fmalloc_save(c(1, 2, 3, 4), "v", heap)
  fmalloc_close(heap)
  invisible(gc())
  path
}

test_that("in-place writes in one process persist to the next", {
  skip_if_not_installed("callr")
  path <- local_named_heap()
  run_r(function(path) {
    heap <- Rfmalloc::fmalloc_open(path)
    v <- Rfmalloc::fmalloc_get("v", heap)
    v[2:3] <- c(20, 30)
    NULL # ends without closing anything
  }, path = path)
  got <- run_r(function(path) {
    Rfmalloc::fmalloc_get("v", Rfmalloc::fmalloc_open(path, readonly = TRUE))
  }, path = path)
  expect_identical(got, c(1, 20, 30, 4))
})

test_that("a writer killed without cleanup leaves named objects reconnectable", {
  skip_if_not_installed("callr")
  skip_on_os("windows")
  path <- local_heap_path()
  ready <- tempfile("ready-")
  on.exit(unlink(ready), add = TRUE)
  proc <- callr::r_bg(function(path, ready) {
    heap <- Rfmalloc::fmalloc_open(path, size_gb = 0.01)
    x <- Rfmalloc::fmalloc_save(data.frame(a = 1:3, b = c("x", "y", "z")), "df", heap)
    x$a[1] <- 10L # an in-place write after the save
    Rfmalloc::fmalloc_save(1:5, "later", heap)
    file.create(ready)
    Sys.sleep(60)
  }, args = list(path = path, ready = ready), libpath = .libPaths())
  deadline <- Sys.time() + 60
  while (!file.exists(ready) && proc$is_alive() && Sys.time() < deadline) Sys.sleep(0.05)
  expect_true(file.exists(ready))
  proc$kill() # SIGKILL: no finalizers, no sync, no unlock
  proc$wait()

  heap <- fmalloc_open(path)
  on.exit(fmalloc_close(heap), add = TRUE)
  expect_identical(fmalloc_ls(heap)$name, c("df", "later"))
  df <- fmalloc_get("df", heap)
  expect_identical(df$b, c("x", "y", "z"))
  expect_identical(fmalloc_get("later", heap), 1:5)
  # The write itself may or may not have reached the disk; the page cache
  # of a killed process is kept by the kernel, so it does here.
  expect_identical(df$a, c(10L, 2L, 3L))
})

test_that("read-only opens give read-only vectors and can be shared", {
  skip_if_not_installed("callr")
  path <- local_named_heap()
  local_holder(path, readonly = TRUE)
  local_holder(path, readonly = TRUE)
  heap <- fmalloc_open(path, readonly = TRUE)
  on.exit(suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned"))
  v <- fmalloc_get("v", heap)
  v[1] <- 100 # R copies: the mapping is read-only
  expect_identical(v, c(100, 2, 3, 4))
  expect_identical(fmalloc_get("v", heap), c(1, 2, 3, 4))
  expect_fmalloc_error(fmalloc_save(1, "w", heap), "fmalloc_readonly")
  expect_fmalloc_error(fmalloc_rm("v", heap), "fmalloc_readonly")

  # Another reader process sees the file unchanged.
  got <- run_r(function(path) {
    Rfmalloc::fmalloc_get("v", Rfmalloc::fmalloc_open(path, readonly = TRUE))
  }, path = path)
  expect_identical(got, c(1, 2, 3, 4))
})

test_that("a second writer gets fmalloc_locked naming the file", {
  skip_if_not_installed("callr")
  path <- local_named_heap()
  local_holder(path)
  err <- expect_fmalloc_error(fmalloc_open(path), "fmalloc_locked")
  expect_match(conditionMessage(err), basename(path), fixed = TRUE)
})

test_that("forked workers read and write named vectors but cannot allocate", {
  skip_on_os("windows")
  skip_if_not_installed("callr")
  # Forked in a fresh R process: callr (processx) replaces parallel's SIGCHLD
  # handler in this one, so children forked here would never be reaped
  # (zombies, and "Error while shutting down parallel" at exit).
  res <- run_r(function(path) {
    library(Rfmalloc)
    heap <- fmalloc_open(path, size_gb = 0.01)
    fmalloc_save(double(8), "v", heap)
    wrote <- parallel::mclapply(1:2, function(i) {
      v <- fmalloc_get("v", heap)
      v[(4 * i - 3):(4 * i)] <- i * 1:4 # in place, into the shared mapping
      sum(fmalloc_get("v", heap)[(4 * i - 3):(4 * i)])
    }, mc.cores = 2)
    refused <- parallel::mclapply(1:2, function(i) {
      tryCatch(
        if (i == 1) create_fmalloc_vector("double", 10, heap = heap) else fmalloc_save(1:3, "child", heap),
        error = function(e) class(e)
      )
    }, mc.cores = 2)
    list(wrote = wrote, v = fmalloc_get("v", heap)[], refused = refused,
         child = fmalloc_exists("child", heap))
  }, path = local_heap_path())
  expect_identical(unlist(res$wrote), c(10, 20))
  expect_identical(res$v, c(1, 2, 3, 4, 2, 4, 6, 8))
  expect_true("fmalloc_forked" %in% res$refused[[1]])
  expect_true("fmalloc_forked" %in% res$refused[[2]])
  expect_false(res$child)
})
