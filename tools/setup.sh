#!/usr/bin/env bash
# Checks what building, testing and checking Rfmalloc needs, and installs
# what is missing where it can:
#   * R (>= 4.2) with a C compiler, and the R packages the tests, docs and
#     benchmarks use (checked with requireNamespace(), wherever they came
#     from: CRAN, r-universe, Debian's r-cran-* packages, ...);
#   * pandoc and qpdf (vignettes, R CMD check);
#   * Rust (cargo, rustc >= 1.89), which must already be there.
# On Debian and Ubuntu, as root (or with sudo), what is missing is installed
# from the distribution's packages (r-base-dev, r-cran-testthat, ...); apt's
# output goes to a log file whose path is printed. Elsewhere it says what to
# install. Idempotent: prints one line per check.
set -euo pipefail

say() { echo "setup: $*"; }

# R packages and the Debian packages that provide them.
r_packages=(testthat withr callr data.table roxygen2 knitr rmarkdown bench)
debian_for() { echo "r-cran-$(echo "$1" | tr '[:upper:]' '[:lower:]')"; }

log="${RFMALLOC_SETUP_LOG:-${TMPDIR:-/tmp}/rfmalloc-setup.log}"
have_apt=false
if command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
  have_apt=true
fi
sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
apt_updated=false
apt_install() { # apt_install PKG...: installs Debian packages, output to $log
  if [ "$apt_updated" = false ]; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$log" 2>&1 || return 1
    apt_updated=true
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1
}
install_or_explain() { # install_or_explain WHAT "DEBIAN PKGS" "HOW ELSEWHERE"
  local what="$1" debs="$2" how="$3"
  if [ "$have_apt" = true ]; then
    say "installing $what from Debian's packages ($debs); log: $log"
    # shellcheck disable=SC2086
    if ! apt_install $debs; then
      echo "setup: installing $debs failed; the last lines of $log:" >&2
      tail -20 "$log" >&2
      exit 1
    fi
  else
    echo "setup: missing: $what; $how" >&2
    exit 1
  fi
}

# ---- R, with headers and a compiler ------------------------------------------
r_ok() {
  command -v Rscript >/dev/null 2>&1 || return 1
  Rscript -e 'if (getRversion() < "4.2") quit(status = 1)' >/dev/null 2>&1 || return 1
  [ -f "$(Rscript -e 'cat(R.home("include"))')/R.h" ] || return 1
  command -v "$(R CMD config CC 2>/dev/null | awk '{print $1}')" >/dev/null 2>&1
}
if r_ok; then
  say "R: $(R --version | head -1)"
else
  install_or_explain "R (>= 4.2, with its headers and a C compiler)" "r-base-dev" \
    "install R >= 4.2 from https://cloud.r-project.org (with Rtools on Windows, the Xcode command line tools on macOS)"
  r_ok || { echo "setup: R still not usable after installing r-base-dev" >&2; exit 1; }
  say "R: $(R --version | head -1)"
fi

# ---- R packages ------------------------------------------------------------------
missing_r() {
  Rscript -e 'p <- commandArgs(TRUE); cat(p[!vapply(p, requireNamespace, NA, quietly = TRUE)])' \
    "${r_packages[@]}"
}
missing="$(missing_r)"
if [ -n "$missing" ]; then
  debs=""
  for p in $missing; do debs="$debs $(debian_for "$p")"; done
  install_or_explain "R packages ($missing)" "${debs# }" \
    "in R: install.packages(c($(echo "$missing" | sed -E 's/([^ ]+)/"\1"/g; s/ /, /g')))"
  missing="$(missing_r)"
  [ -z "$missing" ] || { echo "setup: R packages still missing: $missing" >&2; exit 1; }
fi
say "R packages: ${r_packages[*]} (all found)"

# ---- pandoc, qpdf -----------------------------------------------------------------
tools_missing=()
for t in pandoc qpdf; do command -v "$t" >/dev/null 2>&1 || tools_missing+=("$t"); done
if [ "${#tools_missing[@]}" -gt 0 ]; then
  install_or_explain "${tools_missing[*]}" "${tools_missing[*]}" \
    "install ${tools_missing[*]} (vignettes and R CMD check need them)"
fi
say "pandoc, qpdf: found"

# ---- Rust ----------------------------------------------------------------------
export PATH="$PATH:$HOME/.cargo/bin"
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: Rust is required (cargo and rustc >= 1.89); see https://rustup.rs" >&2
  exit 1
fi
say "Rust: $(rustc --version)"
