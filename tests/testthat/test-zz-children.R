# Runs last (test files run in alphabetical order): the suite's own R
# process must have reaped every child it started. Forks made with parallel
# in this process after callr (processx) took over SIGCHLD were never
# reaped: zombies, then "Error while shutting down parallel: unable to
# terminate some child processes" and a 10 s wait when R exits. So every
# fork of the suite happens in a fresh R process (callr::r).

test_that("the test process leaves no unreaped (zombie) children", {
  skip_on_os(c("windows", "mac", "solaris"))
  tasks <- list.files(sprintf("/proc/%d/task", Sys.getpid()), full.names = TRUE)
  lists <- file.path(tasks, "children")
  skip_if_not(length(lists) > 0 && all(file.exists(lists)), "no /proc/<pid>/task/<tid>/children")
  kids <- unlist(lapply(lists, function(f) scan(f, quiet = TRUE)))
  state <- vapply(kids, function(pid) {
    stat <- tryCatch(readLines(sprintf("/proc/%d/stat", pid), warn = FALSE), error = function(e) "")
    sub("^[0-9]+ \\(.*\\) ([A-Za-z]) .*$", "\\1", stat[1])
  }, "")
  expect_identical(kids[state == "Z"], numeric(0))
})
