#!/usr/bin/env bash
# Sets up (tools/setup.sh), installs Rfmalloc into a library of its own
# (.rlib/ in the source tree, or RFMALLOC_LIB) and runs the scripts in
# tools/demo/ in order, each in a new R process, on one heap file: the first
# creates the heap and stores objects, the next ones find them again.
# Prints one line per step; the output of package installation and of the
# build goes to log files whose paths it prints. The demo's own output is
# the R console transcript of each process. To extend the demo, edit those
# scripts or add a new numbered one.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
logs="${RFMALLOC_LOG_DIR:-${TMPDIR:-/tmp}/rfmalloc-demo-logs}"
mkdir -p "$logs"

echo "demo: [1/3] checking R, the R packages and Rust (tools/setup.sh)"
RFMALLOC_SETUP_LOG="$logs/setup.log" bash tools/setup.sh 2>&1 | sed 's/^/      /'
export PATH="$PATH:$HOME/.cargo/bin"

lib="${RFMALLOC_LIB:-$root/.rlib}"
mkdir -p "$lib"
log="$logs/install.log"
echo "demo: [2/3] building Rfmalloc (compiles the Rust core, a minute or two) and installing it into $lib; log: $log"
start=$(date +%s)
if ! R CMD INSTALL --no-test-load --library="$lib" . >"$log" 2>&1; then
  echo "demo: the build failed; the last lines of $log:" >&2
  tail -40 "$log" >&2
  exit 1
fi
echo "demo:       built and installed in $(( $(date +%s) - start )) s"

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
export R_LIBS="$lib${R_LIBS:+:$R_LIBS}"
scripts=(tools/demo/*.R)
echo "demo: [3/3] running ${#scripts[@]} R processes on one heap file, $dir/demo-heap.bin"
for script in "${scripts[@]}"; do
  echo
  echo "################ $(basename "$script"): a new R process ################"
  R --quiet --no-save --no-restore -f "$script" --args "$dir/demo-heap.bin"
done
