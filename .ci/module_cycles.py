#!/usr/bin/env python3
"""Fails when the modules of a crate depend on each other in a cycle.

A module is a top-level module of the crate (`crate::queue`, with everything under it);
it depends on another when its code (comments and test modules left out) names
`crate::other`. Prints each cycle, and one path around it, then exits 1.

    python3 .ci/module_cycles.py crates/core/src
"""
import os
import re
import sys


def strip(source):
    source = re.sub(r"//[^\n]*", "", source)
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    # A test module at the end of a file: `#[cfg(test)] mod tests { ... }` or `mod tests;`.
    source = re.sub(r"#\[cfg\(test\)\]\s*mod \w+\s*\{.*", "", source, flags=re.S)
    return source


def module_graph(root):
    graph = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            parts = os.path.relpath(path, root)[:-3].split(os.sep)
            if "tests" in parts or parts == ["lib"] or parts == ["main"]:
                continue
            if parts[-1] == "mod":
                parts = parts[:-1]
            top = parts[0]
            with open(path, encoding="utf-8") as f:
                used = set(re.findall(r"\bcrate::(\w+)", strip(f.read())))
            graph.setdefault(top, set()).update(used - {top})
    return {m: {d for d in deps if d in graph} for m, deps in graph.items()}


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def path_around(graph, component):
    """One cycle through the component's first module, for the message."""
    start = component[0]
    members = set(component)
    previous = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                path = [v]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                return list(reversed(path)) + [start]
            if w not in previous:
                previous[w] = v
                queue.append(w)
    return component


def main():
    roots = sys.argv[1:] or ["crates/core/src"]
    failed = False
    for root in roots:
        graph = module_graph(root)
        for component in cycles(graph):
            failed = True
            print(f"{root}: modules in a cycle: {', '.join(component)}")
            print(f"  e.g. {' -> '.join(path_around(graph, component))}")
    if failed:
        sys.exit(1)
    print(f"no module cycles in {', '.join(roots)}")


if __name__ == "__main__":
    main()
