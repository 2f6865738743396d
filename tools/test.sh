#!/usr/bin/env bash
# Sets up (tools/setup.sh) and runs every test:
#   1. the Rust core: cargo fmt --check, cargo clippy -D warnings, no module
#      import cycle (tools/module-deps.sh), cargo check of the fuzz targets,
#      cargo test
#   2. R CMD build, then R CMD check --no-manual on the tarball (which runs
#      the testthat suite); an ERROR or WARNING in the check fails the run.
#   3. the same tarball installed with RFMALLOC_CLASSIC=false (no classic
#      path, no non-API call) and the testthat suite run against it.
# Ends with one line "N passed, N failed, N skipped": cargo's test totals plus
# testthat's expectation totals. Exits non-zero if anything failed.
#
# cargo test and R CMD check are each stopped after 40 minutes (a hang fails
# the run instead of eating CI's time).
# Build products go to a scratch directory (RFMALLOC_TEST_DIR, default: a new
# temporary directory), never into the source tree; so do the temporary
# files of every R process (TMPDIR points into it). A scratch directory made
# here is removed when the run passes, and kept (its path printed) when it
# fails; one given as RFMALLOC_TEST_DIR is always kept.
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash tools/setup.sh || exit 1
export PATH="$PATH:$HOME/.cargo/bin"

if [ -n "${RFMALLOC_TEST_DIR:-}" ]; then
  work="$RFMALLOC_TEST_DIR"
  keep_work=true
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/rfmalloc-test.XXXXXX")"
  keep_work=false
fi
mkdir -p "$work/tmp"
work="$(cd "$work" && pwd)"
echo "test: build products and logs in $work"
# R's session directories (Rtmp*), callr's files, test heaps: all inside.
export TMPDIR="$work/tmp"
# The tests read the README and the vignette from the source tree.
export RFMALLOC_SOURCE_DIR="$root"
# Interrupted or failed before the end: keep the scratch directory, say where.
trap 'echo "test: stopped; scratch directory kept: $work"' EXIT

failed_steps=()
step() { # step NAME COMMAND...: runs a command, remembers a failure
  local name="$1"; shift
  echo "==> $name"
  if ! "$@"; then
    echo "==> $name: FAILED"
    failed_steps+=("$name")
    return 1
  fi
}

# ---- 1. Rust core ----------------------------------------------------------
export CARGO_TARGET_DIR="$work/target"
manifest=(--manifest-path "$root/src/rust/Cargo.toml")
if cargo fmt --version >/dev/null 2>&1; then
  step "cargo fmt" cargo fmt "${manifest[@]}" --check
else
  echo "==> cargo fmt: not installed, skipped"
fi
if cargo clippy --version >/dev/null 2>&1; then
  step "cargo clippy" cargo clippy "${manifest[@]}" --all-targets -- -D warnings
else
  echo "==> cargo clippy: not installed, skipped"
fi
# No import cycle among the modules, and r/'s layers used one way only.
step "module deps" bash "$root/tools/module-deps.sh"
# The fuzz targets (src/rust/fuzz, run by hand: see its Cargo.toml) still
# compile against the core.
step "cargo check (fuzz targets)" cargo check --quiet --manifest-path "$root/src/rust/fuzz/Cargo.toml" --bins
step "cargo test" timeout 40m bash -c 'set -o pipefail; cargo test "$@" 2>&1 | tee "'"$work"'/cargo-test.log"' _ "${manifest[@]}"
unset CARGO_TARGET_DIR

# The vendored crates the package builds from offline match Cargo.lock.
step "vendored crates" bash "$root/tools/vendor.sh" --check

# ---- 2. R CMD build + check -------------------------------------------------
cd "$work"
rm -rf Rfmalloc_*.tar.gz Rfmalloc.Rcheck
if step "R CMD build" R CMD build --no-manual "$root"; then
  tarball="$(ls Rfmalloc_*.tar.gz | head -1)"
  # NOT_CRAN: run the tests that start second R processes.
  export NOT_CRAN=true
  step "R CMD check" timeout 40m R CMD check --no-manual "$tarball"
  status="$(grep -E '^Status:' Rfmalloc.Rcheck/00check.log 2>/dev/null | tail -1)"
  echo "R CMD check ${status:-Status: (none: the check did not finish)}"
  if [ -z "$status" ] || echo "$status" | grep -qE 'ERROR|WARNING'; then
    [[ " ${failed_steps[*]} " == *" R CMD check "* ]] || failed_steps+=("R CMD check")
    grep -E -B2 -A15 '\.\.\. (ERROR|WARNING)$' Rfmalloc.Rcheck/00check.log 2>/dev/null | head -80
  fi
  for f in Rfmalloc.Rcheck/tests/testthat.Rout.fail; do
    [ -f "$f" ] && tail -60 "$f"
  done
  # The build used the vendored crates (R >= 4.6 warns about downloads; R 4.2
  # does not check, so this does).
  if grep -q "Downloading crates" Rfmalloc.Rcheck/00install.out 2>/dev/null; then
    echo "==> R CMD check: the install downloaded crates instead of using src/rust/vendor.tar.xz"
    failed_steps+=("offline build")
  fi

  # ---- 3. the build without the classic path (RFMALLOC_CLASSIC=false) -------
  # Installed from the same tarball; the testthat suite runs against it and
  # the library must not import Rf_allocVector3 (R's one non-API call we make).
  rm -rf lib-noclassic && mkdir lib-noclassic
  if step "install (RFMALLOC_CLASSIC=false)" env RFMALLOC_CLASSIC=false \
      R CMD INSTALL --no-test-load --library=lib-noclassic "$tarball" > noclassic-install.log 2>&1; then
    so="$(ls lib-noclassic/Rfmalloc/libs/Rfmalloc.so 2>/dev/null | head -1)"
    if [ -n "$so" ] && nm -D --undefined-only "$so" | grep -qw Rf_allocVector3; then
      echo "==> RFMALLOC_CLASSIC=false: $so still imports Rf_allocVector3"
      failed_steps+=("no-classic build")
    fi
    rm -rf noclassic-src && mkdir noclassic-src && tar -xzf "$tarball" -C noclassic-src
    step "tests (RFMALLOC_CLASSIC=false)" timeout 40m env NOT_CRAN=true R_LIBS="$work/lib-noclassic" \
      Rscript -e 'library(testthat); library(Rfmalloc); stopifnot(!fmalloc_has_classic())
        r <- as.data.frame(test_dir("noclassic-src/Rfmalloc/tests/testthat", reporter = "summary", stop_on_failure = FALSE))
        cat(sprintf("[ FAIL %d | WARN %d | SKIP %d | PASS %d ]\n", sum(r$failed) + sum(r$error), sum(r$warning), sum(r$skipped), sum(r$nb) - sum(r$failed) - sum(r$skipped)))' \
      > noclassic-tests.log 2>&1
    tail -5 noclassic-tests.log
  else
    tail -30 noclassic-install.log
  fi
fi

# ---- totals -----------------------------------------------------------------
passed=0; failed=0; skipped=0
if [ -f "$work/cargo-test.log" ]; then
  read -r p f s < <(awk '/^test result:/ {
      for (i = 1; i <= NF; i++) {
        if ($(i+1) ~ /^passed/) p += $i
        if ($(i+1) ~ /^failed/) f += $i
        if ($(i+1) ~ /^ignored/) s += $i
      }
    } END { print p + 0, f + 0, s + 0 }' "$work/cargo-test.log")
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
fi
rout="$(ls "$work"/Rfmalloc.Rcheck/tests/testthat.Rout "$work"/Rfmalloc.Rcheck/tests/testthat.Rout.fail 2>/dev/null | head -1)"
for log in "$rout" "$work/noclassic-tests.log"; do
  [ -n "$log" ] && [ -f "$log" ] || continue
  line="$(grep -E '\[ FAIL [0-9]+ \| WARN [0-9]+ \| SKIP [0-9]+ \| PASS [0-9]+ \]' "$log" | tail -1)"
  if [ -n "$line" ]; then
    read -r f s p < <(echo "$line" | sed -E 's/.*FAIL ([0-9]+) \| WARN [0-9]+ \| SKIP ([0-9]+) \| PASS ([0-9]+).*/\1 \2 \3/')
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  fi
done

ok=true
if [ "${#failed_steps[@]}" -gt 0 ]; then
  echo "test: FAILED steps: ${failed_steps[*]}"
  ok=false
fi
[ "$failed" -eq 0 ] || ok=false
trap - EXIT
cd "$root"
if [ "$ok" = true ] && [ "$keep_work" = false ]; then
  rm -rf "$work"
else
  echo "test: scratch directory (build products, logs, R's temporary files) kept: $work"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$ok" = true ]
