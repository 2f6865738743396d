# The README's and the vignette's code, as a user pastes it: the R code
# shown (not the hidden chunks knitr also runs), in a fresh `Rscript`.
# Issue 12: the README example failed at the console although knitr ran it.

# The package's source tree: RFMALLOC_SOURCE_DIR (tools/test.sh sets it), the
# tree these tests are in (devtools::test(), test_file()), or the copy
# R CMD check unpacks next to the tests.
source_file <- function(...) {
  roots <- c(
    Sys.getenv("RFMALLOC_SOURCE_DIR"),
    test_path("..", ".."),
    test_path("..", "..", "00_pkg_src", "Rfmalloc")
  )
  for (root in roots[nzchar(roots)]) {
    f <- file.path(root, ...)
    if (file.exists(f)) return(normalizePath(f))
  }
  NA_character_
}

# The R code of the visible chunks of a knitr document: ```{r ...} chunks
# of an .Rmd without include = FALSE / echo = FALSE / eval = FALSE, or the
# ``` r chunks of the .md it made (with the output lines, "#> ...",
# dropped).
visible_code <- function(path) {
  lines <- readLines(path, encoding = "UTF-8")
  out <- character()
  inside <- FALSE
  keep <- FALSE
  for (line in lines) {
    if (!inside && grepl("^```+ *(\\{r|r$)", line)) {
      inside <- TRUE
      header <- gsub(" ", "", line)
      keep <- !grepl("include=FALSE|echo=FALSE|eval=FALSE", header)
      next
    }
    if (inside && grepl("^```+ *$", line)) {
      inside <- FALSE
      next
    }
    if (inside && keep && !grepl("^#>", line)) out <- c(out, line)
  }
  out
}

# Runs `code` with Rscript in a new process that finds this Rfmalloc; the
# script's output (stdout and stderr) with its exit status as attribute.
run_rscript <- function(code) {
  script <- withr::local_tempfile(fileext = ".R")
  writeLines(code, script)
  rscript <- file.path(R.home("bin"), "Rscript")
  libs <- paste(.libPaths(), collapse = .Platform$path.sep)
  out <- suppressWarnings(system2(
    rscript, shQuote(script),
    stdout = TRUE, stderr = TRUE,
    env = c(paste0("R_LIBS=", shQuote(libs)), "R_LIBS_USER=NULL")
  ))
  status <- attr(out, "status")
  list(status = if (is.null(status)) 0L else status, output = out)
}

test_that("the README's example runs as written in Rscript", {
  skip_on_cran()
  skip_if_not_installed("callr")
  readme <- source_file("README.md")
  skip_if(is.na(readme), "README.md not found")
  code <- visible_code(readme)
  expect_true(any(grepl("fmalloc_open(", code, fixed = TRUE)))
  expect_true(any(grepl("callr::r(", code, fixed = TRUE)))
  res <- run_rscript(code)
  expect_identical(res$status, 0L, info = paste(res$output, collapse = "\n"))
  # The second process found the vector and its in-place writes.
  expect_true(any(grepl("0.5 1.5 2.5 0.0", res$output, fixed = TRUE)),
              info = paste(res$output, collapse = "\n"))
})

test_that("the README's chunks are what README.Rmd shows", {
  skip_on_cran()
  rmd <- source_file("README.Rmd")
  md <- source_file("README.md")
  skip_if(is.na(rmd) || is.na(md), "README.Rmd not found (not a source tree)")
  expect_identical(visible_code(md), visible_code(rmd))
})

test_that("the vignette's code runs as written in Rscript", {
  skip_on_cran()
  skip_if_not_installed("callr")
  rmd <- source_file("vignettes", "persistent-vectors.Rmd")
  if (is.na(rmd)) rmd <- system.file("doc", "persistent-vectors.Rmd", package = "Rfmalloc")
  skip_if(!nzchar(rmd) || is.na(rmd), "the vignette's source was not found")
  code <- visible_code(rmd)
  expect_true(length(code) > 20)
  res <- run_rscript(code)
  expect_identical(res$status, 0L, info = paste(tail(res$output, 40), collapse = "\n"))
})
