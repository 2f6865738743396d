#!/usr/bin/env bash
# Installs what building, testing and checking Rfmalloc needs on Debian 12
# (R and the r-cran-* packages, all from Debian's packages), skipping what is
# already installed. Rust (cargo, rustc >= 1.89) must already be there.
# Idempotent; run as root (or with sudo available).
set -euo pipefail

packages=(
  r-base-dev                                   # R, headers, compilers
  r-cran-testthat r-cran-withr r-cran-callr    # tests
  r-cran-data.table                            # Suggests (data.table support)
  r-cran-roxygen2                              # tools/document.sh
  r-cran-knitr r-cran-rmarkdown pandoc         # vignettes, README
  r-cran-bench                                 # benchmarks
  qpdf                                         # R CMD check of PDFs
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: R and the R packages are installed"
fi

export PATH="$PATH:$HOME/.cargo/bin"
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: Rust is required (cargo and rustc >= 1.89); see https://rustup.rs" >&2
  exit 1
fi
echo "setup: $(R --version | head -1); $(rustc --version)"
