# The demo run by tools/demo.sh, in two steps that run as two R processes:
#   Rscript tools/demo.R write <heap file>   creates the heap, stores vectors
#   Rscript tools/demo.R read  <heap file>   opens it again and finds them
# Each step is a list of sections; a section whose functions the installed
# Rfmalloc does not have yet is skipped, so the demo grows with the package.

suppressPackageStartupMessages(library(Rfmalloc))
args <- commandArgs(trailingOnly = TRUE)
stopifnot(length(args) == 2L, args[[1]] %in% c("write", "read"))
step <- args[[1]]
path <- args[[2]]

has <- function(...) all(vapply(c(...), exists, logical(1), envir = asNamespace("Rfmalloc")))

section <- function(title, needs = character(), code) {
  if (!has(needs)) {
    cat(sprintf("\n## %s: skipped (this Rfmalloc has no %s yet)\n", title, paste(needs, collapse = ", ")))
    return(invisible())
  }
  cat(sprintf("\n## %s\n", title))
  force(code)
}

# Echoes an expression and prints its value, like an R console.
show <- function(expr) {
  cat(">", deparse(substitute(expr)), sep = " ")
  cat("\n")
  value <- withVisible(eval.parent(substitute(expr)))
  if (value$visible) print(value$value)
  invisible(value$value)
}

cat(sprintf("# Rfmalloc demo, step '%s' (R process %d)\n", step, Sys.getpid()))

if (step == "write") {
  section("Create a heap file (sparse: 1 GiB costs nothing until written)", code = {
    show(heap <- fmalloc_open(path, size_gb = 1))
    show(heap)
    show(attr(heap, "created"))
  })

  section("Store named objects", needs = c("fmalloc_save", "fmalloc_ls"), code = {
    prices <- seq(100, by = 0.25, length.out = 1e6)
    show(fmalloc_save(prices, "prices", heap))
    show(fmalloc_save(factor(c("a", "b", "a")), "groups", heap))
    show(fmalloc_save(data.frame(id = 1:3, name = c("x", "y", "z")), "table", heap))
    show(fmalloc_ls(heap))
  })

  section("Close the heap", code = {
    show(fmalloc_info(heap))
    show(fmalloc_close(heap))
  })
}

if (step == "read") {
  section("Open the same file in a new R process (read-only)", code = {
    show(heap <- fmalloc_open(path, readonly = TRUE))
    show(heap)
    show(attr(heap, "created"))
    show(fmalloc_info(heap))
  })

  section("Get the named objects back, without copying", needs = c("fmalloc_get", "fmalloc_ls"), code = {
    show(fmalloc_ls(heap))
    show(prices <- fmalloc_get("prices", heap))
    show(length(prices))
    show(sum(prices))
    show(fmalloc_get("groups", heap))
    show(fmalloc_get("table", heap))
  })

  section("Close", code = {
    show(fmalloc_close(heap))
  })

  section("Reopen for writing: modify in place, rename, remove",
          needs = c("fmalloc_get", "fmalloc_rename", "fmalloc_rm"), code = {
    if (exists("prices")) rm(prices)
    invisible(gc()) # the read-only vectors release the file
    show(heap <- fmalloc_open(path))
    # (Not through show(), which would keep a second reference to `p`: R
    # then copies before modifying, as for any shared vector.)
    cat('> p <- fmalloc_get("prices", heap); p[1:2] <- c(-1, -2)  # writes into the file\n')
    local({
      p <- fmalloc_get("prices", heap)
      p[1:2] <- c(-1, -2)
    })
    show(fmalloc_get("prices", heap)[1:3])
    show(fmalloc_rename("groups", "labels", heap))
    show(fmalloc_rm("table", heap))
    show(fmalloc_ls(heap)[, c("name", "class", "length", "bytes")])
    show(fmalloc_close(heap))
  })
}
