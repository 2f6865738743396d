#!/usr/bin/env bash
# Prints the dependencies between the core's top-level modules (and r/) of
# src/rust/src as "module -> modules it names", from code lines only (not
# comments), then any import cycle among them ("cycles: none" when there is
# none). Usage: bash tools/module-deps.sh
set -uo pipefail
cd "$(dirname "$0")/../src/rust/src"
deps="$(
for f in $(ls *.rs */*.rs 2>/dev/null | grep -v "tests\.rs\|meta_tests\|^bin/"); do
  m=$(echo "$f" | sed 's/\.rs$//; s/\/mod$//' | cut -d/ -f1)
  grep -vE '^\s*//' "$f" | grep -ohE "crate::[a-z_]+" | sed 's/crate:://' | while read -r d; do
    [ "$d" != "$m" ] && echo "$m $d"
  done
done | sort -u
)"
echo "$deps" | awk '{a[$1]=a[$1]" "$2} END {for (k in a) print k" ->"a[k]}' | sort
echo "$deps" | python3 -c '
import sys, collections
g = collections.defaultdict(set)
for line in sys.stdin:
    if line.strip():
        a, b = line.split(); g[a].add(b)
state, cycles = {}, []
def dfs(u, stack):
    state[u] = 1; stack.append(u)
    for v in sorted(g[u]):
        if state.get(v) == 1: cycles.append(" -> ".join(stack[stack.index(v):] + [v]))
        elif not state.get(v): dfs(v, stack)
    stack.pop(); state[u] = 2
for u in sorted(g):
    if not state.get(u): dfs(u, [])
print("cycles: " + ("; ".join(cycles) if cycles else "none"))
'
