"""The import structure: avs_depth_core's parts are layered along the data flow, and nothing imports upward.

A module may import from its own layer or a lower one; the ROS layer (avs_depth_ros) imports the core, never the reverse.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "avs_depth_core"
# Lowest first: the parts of avs_depth_core (folders, and modules at the package's top level).
LAYERS = (
    {"files", "config", "checkpoint", "device", "guards", "geometry", "metrics", "scaling", "visualise", "ort_session"},
    {"audio"},
    {"data"},
    {"sim"},
    {"models"},
    {"losses"},
    {"relative", "rescale", "export", "backends", "pipeline", "pipeline_settings", "inference", "gradcam"},
    {"evaluation"},
    {"train"},
    {"cli"},
)
LAYER_OF = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """avs_depth_core.data.cache -> data; avs_depth_core.device -> device."""
    return module.split(".")[1]


def imports(path: Path, package: str) -> set[str]:
    """Absolute names of the avs_depth_core modules `path` imports (relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)  # importlib.import_module("avs_depth_core....")
    return {name for name in found if name.startswith("avs_depth_core.")}


def source_files(folder: Path) -> list[tuple[Path, str]]:
    out = []
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        package = ".".join(rel.parts[:-1]) if rel.name != "__init__" else ".".join(rel.parts)
        out.append((path, package))
    return out


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in CORE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").is_file())}
    assert parts == set(LAYER_OF), f"parts without a layer: {sorted(parts - set(LAYER_OF))}"


def test_nothing_imports_upward():
    upward = []
    for path, package in source_files(CORE):
        rel = path.relative_to(CORE)
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if own == "__init__":
            continue
        for name in imports(path, package):
            other = part_of(name)
            if other in LAYER_OF and LAYER_OF[other] > LAYER_OF[own]:
                upward.append(f"{path.relative_to(ROOT)} imports {name} ({own} is below {other})")
    assert not upward, "\n".join(upward)


def test_core_never_imports_ros():
    offenders = []
    for path, _ in source_files(CORE):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ("rclpy", "avs_depth_ros")]
    assert not offenders, offenders


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def test_no_import_cycle_between_files():
    files = {module_name(path): (path, package) for path, package in source_files(CORE)}
    graph: dict[str, set[str]] = {}
    for name, (path, package) in files.items():
        targets = set()
        for imported in imports(path, package):
            while imported and imported not in files:
                imported = imported.rpartition(".")[0]
            # a package's __init__ re-exporting its children is not a dependency of the parent on them
            if imported and imported != name and not imported.startswith(name + "."):
                targets.add(imported)
        graph[name] = targets
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for other in sorted(graph[node]):
            if state.get(other) == 1:
                cycles.append([*stack[stack.index(other):], other])
            elif other not in state:
                visit(other)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
