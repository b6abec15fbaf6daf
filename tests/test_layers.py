"""Import layering of the library, read from the source with ``ast`` (nothing is imported).

Each unit (a sub-package or top-level module of ``rdmm_lightning``, or the ``datamodules``
package) sits in one layer of :data:`LAYERS`, lowest first. A module may import its own unit and
the units of *lower* layers only: never a unit of its own layer (``losses`` and ``shooting`` are
independent) or of a higher one. Imports inside functions and under ``TYPE_CHECKING`` count too.
Lightning and Hydra/OmegaConf are imported from the ``models`` layer up only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "rdmm_lightning"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "options", "result", "runtime", "presets"),  # leaves: import nothing of ours
    ("ops",),  # tensor maths
    ("grid",),  # the Grid: shape, index <-> world, domain spacing
    ("shooting", "losses", "metrics", "io", "pretrained"),  # pretrained: model cards, no torch
    ("optimize", "nets", "viz", "synthetic"),
    ("models", "datamodules"),  # Lightning modules and data
    ("pipeline", "training"),  # orchestration: register/infer/evaluate, the training app
    ("api", "cli"),  # entry points
    (PACKAGE,),  # the package root (its lazy API)
)
"""Units by layer, lowest first; a module imports only its own unit and lower layers."""

FRAMEWORKS = ("pytorch_lightning", "lightning", "lightning_fabric", "hydra", "omegaconf")
"""Top-level packages allowed from the ``models`` layer up only."""

FRAMEWORK_LAYER = next(i for i, units in enumerate(LAYERS) if "models" in units)

LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _module_name(rel: Path) -> tuple[str, bool]:
    """Dotted name of a source file relative to the repository root, and whether it is a
    package ``__init__``."""
    parts = rel.with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _is_submodule(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def imported_names(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` (relative ones resolved;
    ``from pkg import name`` gives ``pkg.name`` when ``name`` is a module of ``pkg``)."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if _is_submodule(f"{target}.{a.name}")]
            found += [(node.lineno, name) for name in subs or [target]]
    return found


def unit_of(name: str) -> str | None:
    """The layered unit of a module name (None for modules outside the project)."""
    parts = name.split(".")
    if parts[0] == PACKAGE:
        return parts[1] if len(parts) > 1 else PACKAGE
    if parts[0] == "datamodules":
        return "datamodules"
    return None


def violations(rel: Path, source: str) -> list[str]:
    """The layering errors of one source file (path relative to the repository root)."""
    module, is_package = _module_name(rel)
    unit = unit_of(module)
    if unit not in LAYER_OF:
        return [f"{rel}: unit {unit!r} is in no layer of tests/test_layers.py LAYERS"]
    layer = LAYER_OF[unit]
    errors = []
    for line, name in imported_names(source, module, is_package):
        target = unit_of(name)
        top = name.split(".")[0]
        if target is None:
            if top in FRAMEWORKS and layer < FRAMEWORK_LAYER:
                errors.append(f"{rel}:{line}: {unit} imports {name} (only models and above may)")
            continue
        if target == unit:
            continue
        if target not in LAYER_OF:
            errors.append(f"{rel}:{line}: imports {name}, whose unit is in no layer")
        elif LAYER_OF[target] >= layer:
            how = "its own layer" if LAYER_OF[target] == layer else "a higher layer"
            errors.append(f"{rel}:{line}: {unit} imports {name} ({target}: {how})")
    return errors


def _sources() -> list[Path]:
    files = sorted((ROOT / PACKAGE).rglob("*.py")) + sorted((ROOT / "datamodules").rglob("*.py"))
    return [f.relative_to(ROOT) for f in files]


def test_no_upward_or_sideways_import():
    sources = _sources()
    assert len(sources) > 50  # the walk found the library
    errors = [e for rel in sources for e in violations(rel, (ROOT / rel).read_text())]
    assert not errors, "\n".join(errors)


def test_every_unit_has_a_layer():
    units = {unit_of(_module_name(rel)[0]) for rel in _sources()}
    assert units <= set(LAYER_OF), sorted(units - set(LAYER_OF))


@pytest.mark.parametrize(
    "rel, source",
    [
        ("rdmm_lightning/losses/extra.py", "from ..shooting import MODELS\n"),
        ("rdmm_lightning/losses/extra.py", "import rdmm_lightning.shooting.units\n"),
        ("rdmm_lightning/ops/extra.py", "def f():\n    from ..losses import ssd_loss\n"),
        ("rdmm_lightning/models/extra.py", "from .. import __version__\n"),
        ("rdmm_lightning/models/extra.py", "from ..pipeline.config import OptionError\n"),
        ("rdmm_lightning/models/extra.py", "from datamodules import PairDataModule\n"),
        ("rdmm_lightning/nets/extra.py", "import pytorch_lightning as pl\n"),
        ("rdmm_lightning/optimize/extra.py", "from omegaconf import OmegaConf\n"),
        ("rdmm_lightning/options.py", "from .ops import grid\n"),
        ("rdmm_lightning/newpkg/extra.py", "import torch\n"),
    ],
)
def test_checker_flags_a_wrong_way_import(rel, source):
    """Negative controls: each of these imports breaks the layering and is reported."""
    assert violations(Path(rel), source)


@pytest.mark.parametrize(
    "rel, source",
    [
        ("rdmm_lightning/losses/extra.py", "from ..ops.energy import momentum_energy\n"),
        ("rdmm_lightning/losses/extra.py", "from . import modules\nfrom .similarity import x\n"),
        ("rdmm_lightning/pipeline/extra.py", "from .. import options\nfrom ..models import m\n"),
        ("rdmm_lightning/models/extra.py", "import pytorch_lightning as pl\nimport torch\n"),
        ("rdmm_lightning/cli/extra.py", "from rdmm_lightning.training import main\n"),
        ("datamodules/extra.py", "from rdmm_lightning.io.pairs import read_pairs_csv\n"),
    ],
)
def test_checker_accepts_a_downward_import(rel, source):
    """Positive controls: own unit, lower layers, frameworks from models up."""
    assert violations(Path(rel), source) == []
