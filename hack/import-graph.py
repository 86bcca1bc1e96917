#!/usr/bin/env python3
"""The import graph of the library's top-level modules, from the `crate::` paths in
src/ (use lines, grouped imports and inline paths alike), and any cycle in it.

Usage: hack/import-graph.py [--edges]   (exit 1 when there is a cycle)

A module is a top-level name under src/: src/cache/pods.rs belongs to `cache`.
`super::` paths stay inside their module and are not edges.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def group_heads(text: str, start: int) -> list[str]:
    """The first name of each item of the brace group opening at text[start]."""
    depth, item, heads = 0, "", []
    for ch in text[start:]:
        if ch == "{":
            depth += 1
            if depth == 1:
                continue
        elif ch == "}":
            depth -= 1
            if depth == 0:
                heads.append(item)
                break
        elif ch == "," and depth == 1:
            heads.append(item)
            item = ""
            continue
        if depth >= 1:
            item += ch
    names = []
    for head in heads:
        m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)", head)
        if m and m.group(1) not in ("self", "super"):
            names.append(m.group(1))
    return names


def imports(text: str) -> set[str]:
    found = set()
    for m in re.finditer(r"\bcrate::(\{|[A-Za-z_][A-Za-z0-9_]*)", text):
        if m.group(1) == "{":
            found.update(group_heads(text, m.start(1)))
        else:
            found.add(m.group(1))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_of(p) for p in SRC.glob("*.rs")} | {p.name for p in SRC.iterdir() if p.is_dir()}
    modules -= {"lib", "main"}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for path in SRC.rglob("*.rs"):
        source = module_of(path)
        if source not in edges:
            continue
        for target in imports(strip_comments(path.read_text())):
            if target in modules and target != source:
                edges[source].add(target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    edges = graph()
    if "--edges" in sys.argv:
        for source in sorted(edges):
            print(f"{source} -> {', '.join(sorted(edges[source])) or '(leaf)'}")
    found = cycles(edges)
    for component in found:
        print("cycle among: " + " ".join(component))
    if not found:
        print(f"no cycle among {len(edges)} modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
