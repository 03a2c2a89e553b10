#!/usr/bin/env python3
"""Fails when the modules of a crate use each other in a cycle.

Usage: scripts/module-cycles.py [--graph] [SRC_DIR]   (default crates/session/src)

A module is a top-level file of SRC_DIR (`claim.rs`, with `claim/` below
it); lib.rs and the modules lib.rs declares `#[cfg(test)]` are left out.
Module A uses module B when A's code outside `#[cfg(test)]` items names a
path `crate::B...` (also in a grouped `use crate::{B, ...}`, through a
re-export at the crate root such as `crate::Session`, or as `super::B` from
a top-level file). Doc comments count too: an intra-doc link to a higher
module is a use of it; name it in plain backticks instead.

Exits 1, naming each cycle with the lines that make it, when the use graph
is not acyclic: docs/architecture.md lists the layers, which module may use
which. `--graph` prints every module's uses.
"""

import os
import re
import sys
from collections import deque


def strip_test_items(text):
    """The text with every item marked `#[cfg(test)]` blanked out (newlines
    kept, so line numbers stay)."""
    out = list(text)
    i = 0
    while True:
        i = text.find("#[cfg(test)]", i)
        if i < 0:
            break
        end = item_end(text, i + len("#[cfg(test)]"))
        for k in range(i, end):
            if out[k] != "\n":
                out[k] = " "
        i = end
    return "".join(out)


def item_end(text, i):
    """Where the item starting at or after `i` ends: after its `;` or its
    closing brace, skipping strings, chars and comments."""
    depth = 0
    n = len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            if i < 0:
                return n
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        m = re.match(r'r(#*)"', text[i:i + 10]) if c == "r" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) else None
        if m:
            close = '"' + m.group(1)
            j = text.find(close, i + len(m.group(0)))
            i = n if j < 0 else j + len(close)
            continue
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if c == "'":
            # A char literal ('x', '\n', '\u{1F600}'), not a lifetime ('a).
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:i + 12])
            if m:
                i += len(m.group(0))
                continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        elif c == ";" and depth == 0:
            return i + 1
        i += 1
    return n


def root_reexports(lib):
    """`pub use claim::{A, B};` at the crate root: {"A": "claim", ...}."""
    names = {}
    for m in re.finditer(r"pub use (\w+)::(\{[^}]*\}|\w+)\s*;", lib):
        for name in re.findall(r"\w+", m.group(2)):
            names[name] = m.group(1)
    return names


def test_only_modules(lib):
    return set(re.findall(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", lib))


def uses(src):
    """{module: {used module: [(file, line, text), ...]}}."""
    lib = open(os.path.join(src, "lib.rs")).read()
    reexports = root_reexports(lib)
    skip = test_only_modules(lib) | {"lib"}
    files = {}
    for dirpath, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, src)
                top = rel.split(os.sep)[0]
                top = top[:-3] if top.endswith(".rs") else top
                if top not in skip:
                    files[path] = (top, rel.count(os.sep))
    modules = {top for top, _ in files.values()}
    graph = {m: {} for m in modules}

    def add(mod, target, path, lineno, line):
        target = reexports.get(target, target)
        if target in modules and target != mod:
            graph[mod].setdefault(target, []).append((path, lineno, line.strip()))

    for path, (mod, depth) in sorted(files.items()):
        text = strip_test_items(open(path).read())
        for lineno, line in enumerate(text.split("\n"), 1):
            for m in re.finditer(r"\bcrate::(\w+)", line):
                add(mod, m.group(1), path, lineno, line)
            for m in re.finditer(r"\b((?:super::)+)(\w+)", line):
                if m.group(1).count("super::") == depth + 1:
                    add(mod, m.group(2), path, lineno, line)
        # `use crate::{a, b::c}` may span lines: its top-level names.
        lines = text.split("\n")
        for m in re.finditer(r"\buse crate::\{", text):
            start = m.end()
            end = item_end(text, start - 1) - 1
            level = 0
            for k in range(start, end + 1):
                c = text[k]
                if c == "{":
                    level += 1
                elif c == "}":
                    level -= 1
                elif level == 0 and (k == start or text[k - 1] == ","):
                    name = re.match(r"\s*(\w+)", text[k:end])
                    if name:
                        lineno = text.count("\n", 0, k + name.end()) + 1
                        add(mod, name.group(1), path, lineno, lines[lineno - 1])
    return graph


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def shortest_cycle(graph, comp):
    """A shortest cycle through the component's first module."""
    start = comp[0]
    inside = set(comp)
    prev = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w in inside and w not in prev:
                prev[w] = v
                queue.append(w)
    return comp + [start]


def main(argv):
    show = "--graph" in argv
    args = [a for a in argv if a != "--graph"]
    src = args[0] if args else "crates/session/src"
    graph = uses(src)
    if show:
        for m in sorted(graph):
            print(m, "->", " ".join(sorted(graph[m])))
    found = cycles(graph)
    for comp in found:
        ring = shortest_cycle(graph, comp)
        print(f"module-cycles: modules of {src} use each other in a cycle: " + " -> ".join(ring), file=sys.stderr)
        for a, b in zip(ring, ring[1:]):
            path, lineno, line = graph[a][b][0]
            print(f"  {a} -> {b}: {path}:{lineno}: {line}", file=sys.stderr)
        if len(comp) > len(ring) - 1:
            print(f"  (and every module of {', '.join(comp)} reaches every other)", file=sys.stderr)
    if found:
        print("module-cycles: a module may use only the layers below it (docs/architecture.md): move the code down, or pass it in", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
