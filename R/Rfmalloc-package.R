#' Rfmalloc: vectors in memory-mapped heap files
#'
#' Rfmalloc keeps the data of R vectors in a memory-mapped *heap file*. Open a
#' heap with [fmalloc_open()]; its vectors are used like any R vector, and
#' named ones are found again, without copying, in a later R session.
#'
#' The heap file's format (header, catalog, allocator blocks, string pools,
#' object metadata, references, locking) is specified in the file
#' `system.file("FORMAT.md", package = "Rfmalloc")`.
#'
#' @section Heap files from others:
#' Opening a heap, listing it ([fmalloc_ls()]), checking it
#' ([fmalloc_check()]) and getting objects ([fmalloc_get()]) never run code
#' from the file, never load a package it names, never crash R and never
#' change a file they refuse; problems are errors of class `fmalloc_error`.
#' What R does *with* an object afterwards is R's: printing calls the print
#' method of the object's class, and some of R's own methods interpret text
#' stored in the object (for example `utils`' `print.bibentry()` evaluates
#' `\Sexpr` code in bibliography fields, just as it would for the same
#' object read with `readRDS()`). Look at the classes [fmalloc_ls()] reports
#' before printing objects from a heap you do not trust.
#'
#' @section Options:
#' \describe{
#'   \item{`fmalloc.verbose`}{`TRUE` to have functions report what they did;
#'     the default, `FALSE`, keeps them quiet.}
#' }
#'
#' @section Errors:
#' Every error raised by Rfmalloc has class `fmalloc_error` and one subclass
#' saying what went wrong, so it can be handled with [tryCatch()]:
#' \describe{
#'   \item{`fmalloc_corrupt`}{the file is not an Rfmalloc heap or fails
#'     validation; it was not modified.}
#'   \item{`fmalloc_locked`}{another process has the heap open for writing
#'     (or reading, when you ask to write), or this session has it open in
#'     the other mode (through a handle, or vectors of a closed one); the
#'     message says which process or what in this session, and what to do.}
#'   \item{`fmalloc_full`}{the heap is full and could not grow.}
#'   \item{`fmalloc_readonly`}{a write was attempted on a read-only heap.}
#'   \item{`fmalloc_forked`}{allocation was attempted in a process forked off
#'     the writer.}
#'   \item{`fmalloc_not_found`, `fmalloc_exists`}{no object, or already an
#'     object, of that name.}
#'   \item{`fmalloc_closed`}{the heap handle has been closed.}
#'   \item{`fmalloc_rolled_back`}{a batch inside the open one was rolled
#'     back, and with it the open one's changes ([fmalloc_batch()]).}
#'   \item{`fmalloc_io`}{the operating system refused an operation.}
#'   \item{`fmalloc_invalid`}{an argument is not valid.}
#'   \item{`fmalloc_bounds`}{[fmalloc_write()] was given a position outside
#'     the object (or a name it does not have), or `heap[[k]]` a position
#'     past the heap's objects.}
#'   \item{`fmalloc_type`}{[fmalloc_write()] was given a value that cannot
#'     be stored exactly in the object's type (e.g. 1.5 into an integer
#'     vector, a label that is not a level of a factor).}
#'   \item{`fmalloc_unsupported`}{[fmalloc_save()] was given an object with
#'     parts that cannot be stored (functions, environments, ...).}
#'   \item{`fmalloc_mismatch`}{a vector sent by reference ([fmalloc_ref()])
#'     names a heap file that is now a different heap.}
#'   \item{`fmalloc_internal`}{a bug in Rfmalloc (a state it never makes);
#'     please report it.}
#' }
#'
#' This holds for errors raised while R itself calls into Rfmalloc, too:
#' reading or writing an element of a heap vector (`x[i]`, `x[i] <- v`),
#' asking for its data, duplicating or serializing it.
#'
#' Two warning classes (both also `fmalloc_warning`): `fmalloc_recovered`,
#' given by [fmalloc_open()] when the newest commit in the file cannot be
#' read and the heap was opened at the previous one (its message names what
#' was lost); `fmalloc_damaged`, given by [fmalloc_ls()] (and so `names()`,
#' `print()` and `summary()` of a heap) when pages of a read-only heap's
#' catalog are damaged: the objects of the readable pages are listed, the
#' message says how many are not.
#'
#' One message class: `fmalloc_pinned` (also `fmalloc_message`), given by
#' [fmalloc_close()] when vectors of the session still hold the file open;
#' `suppressMessages(..., classes = "fmalloc_pinned")` silences it.
#'
#' @keywords internal
"_PACKAGE"
