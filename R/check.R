#' Check a heap file for damage
#'
#' `fmalloc_check()` reads a whole heap and reports every problem it finds:
#' the file header, both catalog slots, the catalog, the allocator's blocks
#' (inside the heap, aligned, no two overlapping), and for every named object
#' its metadata (checksum and decoding), each block it uses (inside the heap,
#' inside a block of the allocator, its elements inside the block), its
#' string pools (every element of a character vector), the codes of its
#' factors (each `NA` or a level: R refuses to print a factor with any other
#' code, a "malformed factor") and their levels (none twice, as `factor()`
#' and `levels<-` ensure). It also reports when
#' the heap was opened at an older commit because the newest one could not be
#' read (see [fmalloc_open()]).
#'
#' A file that another process truncated while this session has it open
#' gives one row (part `"file"`) and is not read: reading past its end
#' would crash R.
#'
#' The check never writes to the file: it works on read-only heaps, and on a
#' writable heap it commits nothing. Given a path, it opens the file
#' read-only for the check alone; a file that cannot be opened (not a heap,
#' damaged beyond opening, missing) gives one row with part `"open"` and the
#' reason, and the file is left unchanged. Only a file that a writer has open
#' is an error (class `fmalloc_locked`): check it through the writer's
#' handle instead. In a process forked off the writer
#' ([parallel::mclapply()]) the check is an error of class `fmalloc_forked`:
#' the parent may have changed the heap since the fork, so check it there.
#'
#' @param heap A heap handle from [fmalloc_open()], or the path of a heap
#'   file.
#'
#' @returns A data frame with one row per problem and the character columns
#'   `object` (the name of the object concerned, `NA` for the heap as a
#'   whole), `part` (`"open"`, `"file"`, `"header"`, `"slot A"`, `"slot B"`,
#'   `"catalog"`, `"recovery"`, `"allocator"`, or for an object `"meta"`, `"summary"`,
#'   `"block 1"`, `"block 2"`, ..., `"string pool"`) and `problem` (what is
#'   wrong). A heap without problems gives zero rows.
#'
#' @seealso [fmalloc_open()]; [Rfmalloc-package] for the error classes.
#' @examples
#' path <- tempfile(fileext = ".bin")
#' heap <- fmalloc_open(path, size_gb = 0.01)
#' fmalloc_save(c("a", "b", NA), "letters", heap)
#' fmalloc_check(heap)
#' fmalloc_close(heap)
#' invisible(gc())
#'
#' # By path (opened read-only for the check).
#' fmalloc_check(path)
#'
#' # A file that is not a heap is one row, not an error.
#' not_a_heap <- tempfile()
#' writeLines("hello", not_a_heap)
#' fmalloc_check(not_a_heap)
#' unlink(c(path, not_a_heap))
#' @export
fmalloc_check <- function(heap) {
  if (missing(heap)) .fm_missing_args("heap", sys.call())
  if (is.character(heap)) {
    .check_path(heap, "heap")
    res <- .rfm(fmalloc_path_check(.absolute_path(heap)))
  } else {
    if (!inherits(heap, "fmalloc_heap")) {
      .invalid(sprintf(
        "`heap` must be a heap handle from fmalloc_open() or the path of a heap file, not %s",
        .describe_value(heap)
      ), sys.call())
    }
    .check_heap(heap)
    res <- .rfm(fmalloc_heap_check(heap))
  }
  data.frame(
    object = res$object, part = res$part, problem = res$problem,
    stringsAsFactors = FALSE
  )
}
