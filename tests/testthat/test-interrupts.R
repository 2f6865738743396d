# Interrupts (Ctrl-C, SIGINT) and signals that arrive in the middle of a
# heap call: what a call committed stays, what it did not leaves nothing
# behind, and the session goes on with the same handle.

# Sends SIGINT to this process after `delay` seconds (from a child shell).
interrupt_in <- function(delay) {
  system(sprintf("(sleep %.2f; kill -INT %d) >/dev/null 2>&1 &", delay, Sys.getpid()))
}

# Skips unless a SIGINT sent to this process interrupts it (R CMD check may
# run the tests with SIGINT ignored or blocked).
skip_unless_interruptible <- function() {
  skip_on_os("windows")
  skip_on_cran()
  got <- tryCatch({
    tools::pskill(Sys.getpid(), tools::SIGINT)
    spin(2)
    FALSE
  }, interrupt = function(i) TRUE)
  skip_if_not(got, "SIGINT does not interrupt this process")
}

# Runs R code for `secs` seconds: R takes an interrupt there at once, or as
# soon as interrupts are allowed again (Sys.sleep() would take it even while
# they are suspended).
spin <- function(secs) {
  t0 <- Sys.time()
  while (Sys.time() - t0 < secs) NULL
}

test_that("an interrupt as a batch begins or ends leaves no batch open to swallow later saves", {
  skip_unless_interruptible()
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.05)
  withr::defer(fmalloc_close(heap), priority = "last")
  ns <- asNamespace("Rfmalloc")
  # An interrupt that arrives inside each of the batch's own steps.
  # (Evaluated in the traced function's frame: `spin` goes in as a value.)
  interrupt_here <- bquote({
    tools::pskill(Sys.getpid(), tools::SIGINT)
    .(spin)(0.5)
  })
  steps <- list(
    list(what = "fmalloc_batch_begin", exit = TRUE, expr = quote(fmalloc_save(1, "a1", heap))),
    list(what = "fmalloc_batch_commit", exit = FALSE, expr = quote(fmalloc_save(1, "a2", heap))),
    list(what = "fmalloc_batch_abort", exit = FALSE,
         expr = quote({ fmalloc_save(1, "a3", heap); stop("give up") }))
  )
  for (k in seq_along(steps)) {
    s <- steps[[k]]
    if (s$exit) {
      suppressMessages(trace(s$what, exit = interrupt_here, where = ns, print = FALSE))
    } else {
      suppressMessages(trace(s$what, tracer = interrupt_here, where = ns, print = FALSE))
    }
    got <- tryCatch({
      tryCatch(fmalloc_batch(heap, eval(s$expr)), error = function(e) NULL)
      spin(1) # an interrupt held back until the batch ended arrives here
      "not interrupted"
    }, interrupt = function(i) "interrupted")
    suppressMessages(untrace(s$what, where = ns))
    expect_identical(got, "interrupted", info = s$what)
    # The batch ended: a save after it is a commit of its own.
    local(fmalloc_save(k, paste0("after_", k), heap))
  }
  fmalloc_close(heap)
  invisible(gc())
  heap <- fmalloc_open(path, readonly = TRUE)
  # What each batch did (nothing, committed, rolled back), and every save
  # after them, is in the file.
  # ("a1" too when the interrupt held back until the batch began came after
  # its code ran.)
  names <- fmalloc_ls(heap)$name
  expect_true(all(c("a2", "after_1", "after_2", "after_3") %in% names))
  expect_false("a3" %in% names)
})

test_that("an interrupted save leaves neither its space taken nor the file held", {
  skip_unless_interruptible()
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.5)
  base <- fmalloc_info(heap)$used
  x <- as.character(seq_len(1e6))
  for (delay in c(0.05, 0.1, 0.2, 0.3, 0.4)) {
    x <- as.character(seq_len(1e6) + delay) # a new deferred string vector each time
    interrupt_in(delay)
    got <- tryCatch({
      local(fmalloc_save(x, "x", heap, overwrite = TRUE))
      spin(2) # the interrupt arrives here if the save was quicker
      "not interrupted"
    }, interrupt = function(i) "interrupted")
    expect_identical(got, "interrupted")
    if (fmalloc_exists("x", heap)) expect_identical(fmalloc_get("x", heap)[[7]], x[[7]])
    fmalloc_rm("x", heap)
    invisible(gc())
    expect_identical(fmalloc_info(heap)$used, base, info = delay)
  }
  rm(x)
  fmalloc_close(heap)
  invisible(gc())
  # No vector of the heap is left behind: another process can open it.
  expect_true(callr::r(function(path) {
    h <- Rfmalloc::fmalloc_open(path)
    Rfmalloc::fmalloc_close(h)
    TRUE
  }, list(path)))
})

test_that("an interrupt during a save inside a batch rolls the batch back, and stops the code after it", {
  skip_unless_interruptible()
  path <- local_heap_path()
  heap <- fmalloc_open(path, size_gb = 0.05)
  withr::defer(fmalloc_close(heap), priority = "last")
  ns <- asNamespace("Rfmalloc")
  # One interrupt, inside the first save's call into Rust (where interrupts
  # are held back); nothing between the two saves gives R a reason to take
  # it before the second one.
  once <- new.env()
  once$sent <- FALSE
  suppressMessages(trace("fmalloc_named_store", where = ns, print = FALSE, tracer = bquote({
    if (!get("sent", envir = .(once))) {
      assign("sent", TRUE, envir = .(once))
      tools::pskill(Sys.getpid(), tools::SIGINT)
      .(spin)(0.5)
    }
  })))
  withr::defer(suppressMessages(untrace("fmalloc_named_store", where = ns)))
  # Whether `code` was interrupted (and R took it before spin() ended).
  interrupted <- function(code) {
    tryCatch({
      code
      spin(1)
      FALSE
    }, interrupt = function(i) TRUE)
  }
  expect_true(interrupted(fmalloc_batch(heap, {
    fmalloc_save(1, "a", heap)
    fmalloc_save(2, "b", heap)
  })))
  expect_identical(nrow(fmalloc_ls(heap)), 0L)
  # Outside a batch the save is made, and the code after it does not run.
  once$sent <- FALSE
  expect_true(interrupted(local({
    fmalloc_save(1, "a", heap)
    fmalloc_save(2, "b", heap)
  })))
  expect_identical(fmalloc_ls(heap)$name, "a")
})
