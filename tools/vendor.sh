#!/usr/bin/env bash
# Writes src/rust/vendor.tar.xz: the sources of every crate in
# src/rust/Cargo.lock (`cargo vendor --locked`), which the package's build
# (src/Makevars.in, src/Makevars.win.in) unpacks and uses offline.
#
# Why: R CMD INSTALL keeps cargo's downloads out of the user's ~/.cargo (it
# sets CARGO_HOME to the build directory unless the user set it), so without
# vendored sources every install would download the crates, which CRAN's
# policy forbids and `R CMD check` on R >= 4.6 reports ("Downloads Rust
# crates"). Run this after any change to Cargo.lock and commit the result;
# tools/test.sh fails when the tarball does not match Cargo.lock.
#   bash tools/vendor.sh           write the tarball
#   bash tools/vendor.sh --check   exit 1 if it does not match Cargo.lock
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$PATH:$HOME/.cargo/bin"
tarball="$root/src/rust/vendor.tar.xz"

# The crates Cargo.lock names, as "<name>-<version>", sorted.
locked() {
  awk '/^name = /{n=$3} /^version = /{v=$3} /^source = "registry/{gsub(/"/,"",n); gsub(/"/,"",v); print n "-" v}' \
    "$root/src/rust/Cargo.lock" | sort -u
}

if [ "${1:-}" = "--check" ]; then
  [ -f "$tarball" ] || { echo "vendor: $tarball is missing (run tools/vendor.sh)" >&2; exit 1; }
  have="$(tar -tJf "$tarball" | awk -F/ 'NF > 1 && $2 != "" {print $2}' | sort -u)"
  if [ "$have" != "$(locked)" ]; then
    echo "vendor: src/rust/vendor.tar.xz does not match src/rust/Cargo.lock; run tools/vendor.sh" >&2
    diff <(echo "$have") <(locked) >&2 || true
    exit 1
  fi
  echo "vendor: src/rust/vendor.tar.xz matches Cargo.lock ($(echo "$have" | wc -l) crates)"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cargo vendor --locked --versioned-dirs --manifest-path "$root/src/rust/Cargo.toml" "$work/vendor" > /dev/null 2>&1
# Reproducible: fixed order, owner and times, so an unchanged Cargo.lock
# gives an unchanged tarball.
(cd "$work" && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2000-01-01 00:00Z' \
  -cf - vendor | xz -9e -T1 > "$tarball")
echo "vendor: wrote $tarball ($(du -k "$tarball" | cut -f1) KiB, $(locked | wc -l) crates)"
