# Fails (exit status 1) when an R CMD check log has an ERROR, or a WARNING
# other than the one we accept: "checking compiled code" reporting the
# non-API entry point Rf_allocVector3 and nothing else. The classic path
# (method = "classic") calls Rf_allocVector3 on purpose; a build with
# RFMALLOC_CLASSIC=false leaves it out and is checked with warnings as errors.
#
# Usage: Rscript check-log-warnings.R CHECK_DIR
#   CHECK_DIR holds <pkg>.Rcheck/00check.log (check-r-package's check-dir),
#   or is that .Rcheck directory, or is the 00check.log file itself.
#
# The log is a sequence of sections, each starting with "* checking ...";
# a section's result (OK, NOTE, WARNING, ERROR) ends its first line, or
# stands on a line of its own when the check printed something first.

args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 1L) {
  stop("usage: Rscript check-log-warnings.R CHECK_DIR", call. = FALSE)
}

find_log <- function(where) {
  if (!dir.exists(where)) return(where)
  direct <- file.path(where, "00check.log")
  if (file.exists(direct)) return(direct)
  Sys.glob(file.path(where, "*.Rcheck", "00check.log"))
}
log_file <- find_log(args[[1]])
if (length(log_file) != 1L || !file.exists(log_file)) {
  stop("expected one 00check.log under '", args[[1]], "', found ",
       length(log_file), call. = FALSE)
}

# useBytes: the log is in the checking R's native encoding, and sQuote()
# quotes may be typographic or plain; the patterns below are ASCII.
lines <- readLines(log_file, warn = FALSE)
starts <- grep("^\\* ", lines, useBytes = TRUE)
if (!length(starts)) stop("'", log_file, "' has no check sections", call. = FALSE)
sections <- split(lines[starts[1]:length(lines)],
                  cumsum(seq_along(lines)[starts[1]:length(lines)] %in% starts))

result_of <- function(s) {
  for (status in c("ERROR", "WARNING")) {
    if (grepl(paste0("\\.\\.\\. *", status, "$"), s[[1]], useBytes = TRUE) ||
        any(grepl(paste0("^ *", status, " *$"), s[-1], useBytes = TRUE))) {
      return(status)
    }
  }
  "other"
}

# The one accepted WARNING: in "checking compiled code", every finding
# ("Found ...") is the non-API call Rf_allocVector3, and there is one.
# Any other finding (another non-API symbol, abort/exit/printf "possibly
# from", unregistered routines) makes the section unacceptable. Quotes are
# dropped first (typographic ones are non-ASCII bytes; plain ' or ").
unquote <- function(x) gsub("[^ -~]|['\"`]", "", x, useBytes = TRUE)
is_accepted <- function(s) {
  if (!grepl("checking compiled code", s[[1]], fixed = TRUE)) return(FALSE)
  findings <- unquote(grep("^ *Found ", s[-1], value = TRUE, useBytes = TRUE))
  length(findings) == 1L &&
    grepl("^ *Found non-API calls? to R: *Rf_allocVector3 *$", findings, useBytes = TRUE)
}

results <- vapply(sections, result_of, "")
bad <- sections[results == "ERROR" |
                (results == "WARNING" & !vapply(sections, is_accepted, NA))]
accepted <- sections[results == "WARNING" & vapply(sections, is_accepted, NA)]

cat("Check log:", log_file, "\n")
cat(grep("^Status:", lines, value = TRUE, useBytes = TRUE), sep = "\n")
if (length(accepted)) {
  cat("\nAccepted (documented non-API call of the classic path):\n")
  for (s in accepted) cat(s, sep = "\n")
}
if (length(bad)) {
  cat("\nNot accepted:\n")
  for (s in bad) cat(s, "", sep = "\n")
  quit(status = 1L)
}
cat("\nNo ERROR, and no WARNING other than the accepted one.\n")
