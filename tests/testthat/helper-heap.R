# A path for a heap file, removed when the calling test ends.
local_heap_path <- function(env = parent.frame()) {
  withr::local_tempfile(pattern = "heap-", fileext = ".bin", .local_envir = env)
}

# A heap opened for the calling test and closed (file removed) when it ends.
# The test's vectors are still alive then: fmalloc_close()'s message that
# they keep the file open is expected.
local_heap <- function(size_gb = 0.01, env = parent.frame()) {
  path <- local_heap_path(env)
  heap <- fmalloc_open(path, size_gb = size_gb)
  withr::defer(suppressMessages(fmalloc_close(heap), classes = "fmalloc_pinned"), envir = env)
  heap
}

# Starts a second R process that opens `path` and keeps it open until the
# calling test ends. Returns once the heap is open there (or fails the test
# with the child's error).
local_holder <- function(path, readonly = FALSE, env = parent.frame()) {
  ready <- tempfile("ready-")
  proc <- callr::r_bg(
    function(path, readonly, ready) {
      heap <- Rfmalloc::fmalloc_open(path, readonly = readonly)
      file.create(ready)
      Sys.sleep(120)
    },
    args = list(path = path, readonly = readonly, ready = ready),
    libpath = .libPaths()
  )
  withr::defer({ proc$kill(); unlink(ready) }, envir = env)
  deadline <- Sys.time() + 60
  while (!file.exists(ready)) {
    if (!proc$is_alive()) {
      stop("the second R process failed: ", conditionMessage(tryCatch(
        proc$get_result(), error = function(e) e)))
    }
    if (Sys.time() > deadline) stop("the second R process did not open the heap in time")
    Sys.sleep(0.05)
  }
  proc
}

expect_fmalloc_error <- function(object, class, regexp = NULL, ...) {
  err <- expect_error(object, regexp = regexp, class = class, ...)
  expect_s3_class(err, c(class, "fmalloc_error", "error", "condition"), exact = TRUE)
  invisible(err)
}

# Free space in GiB on the file system holding `dir`, from POSIX `df -Pk`;
# NA when df is missing or its output cannot be read (skip_if_not() on the
# comparison then skips). Only for tests that already skip on Windows.
free_disk_gb <- function(dir) {
  out <- tryCatch(
    suppressWarnings(system2("df", c("-Pk", shQuote(dir)), stdout = TRUE, stderr = FALSE)),
    error = function(e) character()
  )
  if (length(out) < 2) return(NA_real_)
  fields <- strsplit(trimws(out[length(out)]), "[[:space:]]+")[[1]]
  if (length(fields) < 4) return(NA_real_)
  suppressWarnings(as.numeric(fields[4])) / 1024^2
}

# Runs the R script lines `code` in a new Rscript, after the shell command
# `before` (a limit such as `ulimit -f 40000`), with the heap path as its
# argument; returns a function giving the value the script printed after
# "key " for a key. With `exits`, the run must exit normally.
run_script <- function(code, path, before = ":", exits = TRUE) {
  script <- withr::local_tempfile(fileext = ".R")
  writeLines(code, script)
  rscript <- file.path(R.home("bin"), "Rscript")
  cmd <- sprintf("%s; exec %s %s %s", before, shQuote(rscript), shQuote(script), shQuote(path))
  out <- withr::with_envvar(
    c(R_LIBS = paste(.libPaths(), collapse = .Platform$path.sep)),
    suppressWarnings(system2("bash", c("-c", shQuote(cmd)), stdout = TRUE, stderr = TRUE))
  )
  if (exits) testthat::expect_null(attr(out, "status"))
  function(key) {
    line <- grep(paste0("^", key, " "), out, value = TRUE)
    trimws(sub(paste0("^", key, " "), "", line))
  }
}

# run_script() under `ulimit -f 40000` (40000 blocks of 1 KiB: room for a
# heap of a few MiB only).
run_under_file_limit <- function(code, path) {
  run_script(code, path, "ulimit -f 40000")
}
