"""The package graph stays plain and downward: cli > deploy/secure/doctor/ops > site > config/errors/resources.

Every module's imports are read with ``ast`` (module level, inside functions and under TYPE_CHECKING alike),
mapped to their top package under ``kheopsctl``, and checked two ways: no package imports one of a higher
level, and the packages form no cycle. The bundled gateway is a library of its own: it imports nothing of the
operator side. A second test keeps project imports at module top in the operator packages.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import kheopsctl

ROOT = Path(kheopsctl.__file__).resolve().parent

LEVEL = {
    "__main__": 4, "cli": 3,
    "deploy": 2, "secure": 2, "doctor": 2, "ops": 2,
    "site": 1,
    "config": 0, "errors": 0, "resources": 0, "__init__": 0,
    "gateway": 0,  # the bundled gateway: a library the operator side may use, never the reverse
}

# Edges present in the tree that break the rule, each with who owns it. A *new* violation fails; this list
# only shrinks (test_pending_edges_still_exist fails when an entry is no longer needed).
PENDING = {
    ("config", "ops"): "config.validate calls kheopsctl.ops.smtp.validate_settings (ops helper, issue 12 follow-up: "
                       "the [smtp] checks belong in config or site)",
    ("deploy", "ops"): "deploy.realm_sync.reconcile calls kheopsctl.ops.smtp.reconcile_realm (ops helper: "
                       "ops -> deploy already exists, so this closes a cycle)",
}

# Project imports kept inside a function, each for a stated reason (module -> imported module).
LAZY = {
    # the gateway runtime (Starlette, uvicorn, psycopg) costs 1-2 s to import: only its own commands pay it
    ("kheopsctl.cli.gateway", "kheopsctl.gateway"),  # `from kheopsctl.gateway import logging`
    ("kheopsctl.cli.gateway", "kheopsctl.gateway.app"),
    ("kheopsctl.cli.gateway", "kheopsctl.gateway.db"),
    ("kheopsctl.cli.gateway", "kheopsctl.gateway.migrate"),
    ("kheopsctl.doctor.database", "kheopsctl.gateway"),  # `from kheopsctl.gateway import migrate` (psycopg)
    # written by the ops helpers in this tree (their commands and the [smtp] hook): theirs to move
    ("kheopsctl.cli.backup", "kheopsctl.ops.backup"),
    ("kheopsctl.cli.backup", "kheopsctl.ops.sitectx"),
    ("kheopsctl.cli.restore", "kheopsctl.ops.restore"),
    ("kheopsctl.deploy.realm_sync", "kheopsctl.ops"),
}
OPERATOR_PACKAGES = ("cli", "deploy", "secure", "doctor", "site")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported kheopsctl module, at module level?) for every import statement of the file."""
    tree = ast.parse(path.read_text(), str(path))
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # under `if TYPE_CHECKING:` still counts as module level
        if isinstance(node, ast.If):
            top_level |= {id(n) for n in node.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        else:
            continue
        out += [(n, id(node) in top_level) for n in names if n == "kheopsctl" or n.startswith("kheopsctl.")]
    return out


def top_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(ROOT.rglob("*.py")):
        me = module_name(path)
        src = top_package(me) if me != "kheopsctl" else "__init__"
        for target, _ in imports(path):
            dst = top_package(target)
            if dst != src:
                edges[(src, dst)].append(f"{me} -> {target}")
    return edges


def cycles(edges) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_every_package_has_a_level():
    packages = {top_package(module_name(p)) for p in ROOT.rglob("*.py")}
    assert packages <= set(LEVEL), f"give these packages a level in LEVEL: {sorted(packages - set(LEVEL))}"


def test_no_upward_import():
    upward = {(a, b): where for (a, b), where in package_edges().items()
              if LEVEL[b] > LEVEL[a] and (a, b) not in PENDING}
    assert not upward, "upward imports:\n" + "\n".join(f"{a} -> {b}: {w[0]}" for (a, b), w in upward.items())


def test_gateway_imports_nothing_of_the_operator_side():
    outside = {k: w for k, w in package_edges().items() if k[0] == "gateway"}
    assert not outside, outside


def test_no_cycle_between_packages():
    edges = {k for k in package_edges() if k not in PENDING}
    assert cycles(edges) == [], {tuple(c): [w for k, w in package_edges().items() if k[0] in c and k[1] in c]
                                 for c in cycles(edges)}


def test_pending_edges_still_exist():
    edges = package_edges()
    gone = [k for k in PENDING if k not in edges]
    assert not gone, f"no longer needed, remove from PENDING: {gone}"


def test_project_imports_sit_at_module_top():
    lazy = set()
    for path in sorted(ROOT.rglob("*.py")):
        me = module_name(path)
        if top_package(me) not in OPERATOR_PACKAGES and me.count(".") >= 1:
            continue
        for target, at_top in imports(path):
            if not at_top:
                lazy.add((me, target))
    assert lazy <= LAZY, f"move these imports to the module top (or say why in LAZY): {sorted(lazy - LAZY)}"


def test_the_checker_sees_a_cycle_and_an_upward_import():
    """The checks above would fail on the graph the issue started from: deploy -> secure -> deploy, and
    deploy -> doctor -> deploy."""
    old = {("deploy", "secure"), ("secure", "deploy"), ("deploy", "doctor"), ("doctor", "deploy"), ("site", "cli")}
    assert sorted(map(sorted, cycles(old))) == [["deploy", "doctor", "secure"]]
    assert [e for e in old if LEVEL[e[1]] > LEVEL[e[0]]] == [("site", "cli")]
