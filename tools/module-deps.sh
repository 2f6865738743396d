#!/usr/bin/env bash
# Prints the dependencies between the modules of src/rust/src as
# "module -> modules it names", from code lines only (not comments), then
# any import cycle among them ("cycles: none" when there is none). Two
# graphs:
#   core: the top-level modules (r/ counts as one module, `r`);
#   r/:   every file of src/rust/src/r/ (r/mod.rs is `r`, r/vector/altrep.rs
#         is `r/vector/altrep`, a folder's mod.rs is the folder), with paths
#         `crate::r::...`, `super::...` and `self::...` resolved to the file
#         they name.
# Then checks the layers of r/ (listed in r/mod.rs) are used one way only.
# Exits 1 on a cycle or an upward use. Usage: bash tools/module-deps.sh
set -uo pipefail
cd "$(dirname "$0")/../src/rust/src"
python3 - <<'EOF'
import collections, glob, os, re, sys

def code(path):
    """The file's text without comments (line and doc comments) and without
    its unit tests (`#[cfg(test)] mod tests`, at the end of a file)."""
    out = []
    for line in open(path, encoding="utf-8"):
        s = line.strip()
        if s.startswith("//"):
            continue
        out.append(re.sub(r"//.*$", "", line))
    text = "".join(out)
    return re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]

def report(title, deps):
    g = collections.defaultdict(set)
    for a, b in deps:
        if a != b:
            g[a].add(b)
    print(f"== {title}")
    for k in sorted(g):
        print(f"{k} -> {' '.join(sorted(g[k]))}")
    state, cycles = {}, []
    def dfs(u, stack):
        state[u] = 1
        stack.append(u)
        for v in sorted(g[u]):
            if state.get(v) == 1:
                cycles.append(" -> ".join(stack[stack.index(v):] + [v]))
            elif not state.get(v):
                dfs(v, stack)
        stack.pop()
        state[u] = 2
    for u in sorted(g):
        if not state.get(u):
            dfs(u, [])
    print("cycles: " + ("; ".join(cycles) if cycles else "none"))
    return not cycles

# Core: top-level modules, `crate::name` paths.
core = set()
for f in glob.glob("*.rs") + glob.glob("*/**/*.rs", recursive=True):
    if f.startswith("bin/") or f.endswith("tests.rs") or "meta_tests" in f:
        continue
    m = f.split("/")[0].removesuffix(".rs")
    for d in re.findall(r"\bcrate::([a-z_]+)", code(f)):
        core.add((m, d))
ok = report("core modules", core)

# r/: one node per file.
files = {}
for f in glob.glob("r/**/*.rs", recursive=True):
    parts = f.removesuffix(".rs").split("/")
    if parts[-1] == "mod":
        parts = parts[:-1]
    files["/".join(parts)] = f
nodes = set(files)

def resolve(base, names):
    """The deepest existing node for the module path base + names."""
    best = None
    path = list(base)
    if "/".join(path) in nodes:
        best = "/".join(path)
    for n in names:
        path.append(n)
        if "/".join(path) in nodes:
            best = "/".join(path)
        else:
            break
    return best

def paths(text):
    """Module paths named in `text`: ('crate'|'super'|'self', [names...]),
    braces of `use` lists expanded one level."""
    for m in re.finditer(r"\b(crate::r|super(?:::super)*|self)((?:::[A-Za-z_][A-Za-z_0-9]*)*)(::\{([^{}]*)\})?", text):
        head, tail, group = m.group(1), m.group(2), m.group(4)
        names = [n for n in tail.split("::") if n]
        if group is None:
            yield head, names
        else:
            for item in group.split(","):
                item = item.strip().split(" as ")[0]
                yield head, names + [n for n in item.split("::") if n and n != "self" and n != "*"]

rdeps = set()
for node, f in files.items():
    me = node.split("/")
    is_mod = f.endswith("mod.rs")
    # The module a file's `super` names: a file's parent folder; for a
    # folder's mod.rs, the folder's parent.
    parent = me[:-1]
    text = code(f)
    found = list(paths(text))
    if is_mod:
        # Bare paths into the folder's own submodules (`vector::altrep::x`).
        for child in re.findall(r"\bmod ([a-z_]+);", text):
            for m in re.finditer(r"(?<![:\w])" + child + r"((?:::[A-Za-z_][A-Za-z_0-9]*)+)", text):
                found.append(("self", [child] + [n for n in m.group(1).split("::") if n]))
    for head, names in found:
        if not names and head != "self":
            continue
        if head == "crate::r":
            base = ["r"]
        elif head == "self":
            base = me
        else:
            base = list(parent)
            for _ in range(head.count("super") - 1):
                base = base[:-1]
        target = resolve(base, names)
        if target and target != node and not target.startswith(node + "/"):
            rdeps.add((node, target))
        elif target and is_mod and target.startswith(node + "/"):
            # A folder's mod.rs calling into its own children (e.g. the
            # init function): a dependency of the folder on them.
            rdeps.add((node, target))
ok = report("r/ modules (one per file)", rdeps) and ok

# The layers of r/, from the bottom up (r/mod.rs): none may use a higher one.
LAYERS = ["r/ffi", "r/types", "r/error", "r/args", "r/vector", "r/named", "r/api", "r"]
def layer(node):
    return next(i for i, p in enumerate(LAYERS) if node == p or node.startswith(p + "/"))
up = sorted(f"{a} -> {b}" for a, b in rdeps if layer(a) < layer(b))
print("r/ layers (" + " < ".join(LAYERS) + "): " + ("; ".join(up) if up else "no upward use"))
ok = ok and not up
sys.exit(0 if ok else 1)
EOF
