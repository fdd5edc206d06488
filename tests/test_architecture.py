"""The package layout of docs/architecture.md: layers with imports pointing down, no circles, no
function-level imports but deferred heavy libraries, and bounded module sizes."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "videxp"
# bottom to top; a module may import its own room and rooms on lower layers only (docs/architecture.md)
LAYERS = [
    {"errors"},
    {"utils", "help"},
    {"video", "weights", "launcher"},
    {"data", "metrics", "inference"},
    {"scoring"},
    {"callbacks"},
    {"models"},
    {"workflows"},
    {"train", "sample", "evaluate", "prepare", "compare", "demo", "status"},
]
HEAVY = {
    "diffusers",
    "transformers",
    "tokenizers",
    "peft",
    "albumentations",
    "matplotlib",
    "wandb",
    "lpips",
    "huggingface_hub",
    "cv2",  # OpenCV: only SSIM's CPU backend needs it in videxp.metrics (GPU runs go without it)
}
MAX_LINES = 800  # a module holding one network may come near this; everything else stays well below


def _modules() -> dict[str, Path]:
    return {
        ".".join(p.relative_to(ROOT).with_suffix("").parts): p
        for p in sorted(PACKAGE.rglob("*.py"))
        if "conf" not in p.relative_to(PACKAGE).parts[:1]
    }


def _room(module: str) -> str:
    """videxp.models.fdm.unet -> models; videxp.sample -> sample."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _layer(room: str) -> int:
    found = [i for i, rooms in enumerate(LAYERS) if room in rooms]
    assert found, f"videxp/{room} is on no layer of docs/architecture.md: add it there and to LAYERS"
    return found[0]


def _imports(tree: ast.Module) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(module-level imports, imports inside functions or classes) as (imported module, line)."""
    top, inner = [], []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if isinstance(child, ast.Import):
                (inner if nested else top).extend((a.name, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                names = [f"{child.module}.{a.name}" for a in child.names]
                (inner if nested else top).extend((n, child.lineno) for n in names)
            visit(child, inside)

    visit(tree, False)
    return top, inner


def _internal(name: str, modules: dict[str, Path]) -> str | None:
    """The videxp module an imported name refers to (`videxp.video.read_video` -> `videxp.video`)."""
    while name:
        if name in modules or f"{name}.__init__" in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def test_imports_point_down_the_layers():
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        room = _room(module)
        top, _ = _imports(ast.parse(path.read_text()))
        for name, line in top:
            target = _internal(name, modules) if name.startswith("videxp") else None
            if target is None or _room(target) == room or target == "videxp":
                continue
            if _layer(_room(target)) >= _layer(room):
                wrong.append(
                    f"{path.relative_to(ROOT)}:{line} imports {target} (layer {_layer(_room(target))})"
                )
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


def test_no_import_circles():
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        top, _ = _imports(ast.parse(path.read_text()))
        graph[module] = {t for n, _ in top if (t := _internal(n, modules)) not in (None, module, "videxp")}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            key = nxt if nxt in graph else f"{nxt}.__init__"
            if state.get(key) == 1:
                return [*path, node, key]
            if key in graph and key not in state and (found := cycle_from(key, [*path, node])):
                return found
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := cycle_from(module, [])):
            raise AssertionError("import circle: " + " -> ".join(found))


def test_function_level_imports_only_defer_heavy_libraries_and_say_so():
    wrong = []
    for path in _modules().values():
        lines = path.read_text().splitlines()
        _, inner = _imports(ast.parse(path.read_text()))
        by_line = {line: name for name, line in reversed(inner)}  # one entry per import statement
        for line, name in by_line.items():
            text = lines[line - 1]
            if name.split(".")[0] not in HEAVY:
                wrong.append(
                    f"{path.relative_to(ROOT)}:{line}: {text.strip()} (not a heavy optional library)"
                )
            elif "#" not in text and not lines[line - 2].lstrip().startswith(("#", "from ", "import ")):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {text.strip()} (no comment says why)")
    assert not wrong, "function-level imports:\n" + "\n".join(wrong)


def test_module_sizes():
    sizes = {p: len(p.read_text().splitlines()) for p in _modules().values()}
    too_long = [f"{p.relative_to(ROOT)}: {n} lines" for p, n in sizes.items() if n > MAX_LINES]
    assert not too_long, too_long
    entry = [p for p in sizes if _room(".".join(p.relative_to(ROOT).with_suffix("").parts)) in LAYERS[-1]]
    assert all(sizes[p] < 150 for p in entry), {str(p): sizes[p] for p in entry}
