#!/usr/bin/env bash
# Sets up (tools/setup.sh), installs Rfmalloc into a library of its own
# (.rlib/ in the source tree, or RFMALLOC_LIB) and runs tools/demo.R in two
# separate R processes: the first creates a heap file and stores vectors in
# it, the second opens the same file and finds them.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash tools/setup.sh
export PATH="$PATH:$HOME/.cargo/bin"

lib="${RFMALLOC_LIB:-$root/.rlib}"
mkdir -p "$lib"
echo "demo: installing Rfmalloc into $lib"
log="$(mktemp)"
if ! R CMD INSTALL --no-test-load --library="$lib" . >"$log" 2>&1; then
  tail -40 "$log" >&2
  exit 1
fi
rm -f "$log"

heap="$(mktemp -d)/demo-heap.bin"
export R_LIBS="$lib${R_LIBS:+:$R_LIBS}"
Rscript tools/demo.R write "$heap"
Rscript tools/demo.R read "$heap"
rm -rf "$(dirname "$heap")"
