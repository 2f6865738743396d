#!/usr/bin/env bash
# Sets up (tools/setup.sh), installs Rfmalloc into a library of its own
# (.rlib/ in the source tree, or RFMALLOC_LIB) and runs the scripts in
# tools/demo/ in order, each in a new R process, on one heap file: the first
# creates the heap and stores objects, the next ones find them again.
# Output is the R console transcript of each process. To extend the demo,
# edit those scripts or add a new numbered one.
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

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
export R_LIBS="$lib${R_LIBS:+:$R_LIBS}"
for script in tools/demo/*.R; do
  echo
  echo "################ $(basename "$script"): a new R process ################"
  R --quiet --no-save --no-restore -f "$script" --args "$dir/demo-heap.bin"
done
