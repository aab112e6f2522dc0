"""The import structure: no cycles, and the core never imports a modality.

Imports point one way: ``cli`` → ``workflow`` → ``modalities`` → core. The core is every
module outside ``vqvae.modalities`` except the layers above it; ``vqvae.data`` also never
imports model code. Function-level (lazy) imports count like module-level ones.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vqvae"
ABOVE_MODALITIES = {"vqvae", "vqvae.workflow", "vqvae.demo", "vqvae.__main__"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """The vqvae modules that ``module`` imports anywhere in its body."""
    path = MODULES[module]
    here = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            target = _resolve(name) if name.split(".")[0] == "vqvae" else None
            if target and target != module:
                found.add(target)
    return found


def test_the_import_graph_has_no_cycles():
    graph = {m: {t for t in imports(m) if MODULES[t].name != "__init__.py"} for m in MODULES}
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(t):], t]))
            if t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("vqvae.modalities")
                                          and m not in ABOVE_MODALITIES
                                          and not m.startswith("vqvae.cli")))
def test_the_core_imports_no_modality(module):
    bad = sorted(t for t in imports(module) if t.startswith("vqvae.modalities"))
    assert not bad, f"{module} (core) imports {bad}: pass what it needs in from the modality instead"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("vqvae.data")))
def test_the_data_package_imports_no_model_code(module):
    allowed = ("vqvae.data", "vqvae.atomic")
    bad = sorted(t for t in imports(module) if not t.startswith(allowed))
    assert not bad, f"{module} imports {bad}: data plumbing must not depend on models or modalities"


def test_the_checker_sees_a_planted_cycle(tmp_path, monkeypatch):
    """The graph walk above would miss nothing: an import inside a function counts."""
    source = "def f():\n    from vqvae.modalities import MODALITIES\n"
    planted = tmp_path / "planted.py"
    planted.write_text(source)
    monkeypatch.setitem(MODULES, "vqvae.planted", planted)
    assert "vqvae.modalities" in imports("vqvae.planted")
