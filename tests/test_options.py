"""The option enums of :mod:`rdmm_lightning.options`: the strings users type, round trips, and
every place that lists an option set takes it from the enum."""

from __future__ import annotations

import argparse
import ast
import json
import pickle
from functools import partial
from pathlib import Path

import pytest

from rdmm_lightning import options as O
from rdmm_lightning.losses import LNCCLoss, similarity_from_name
from rdmm_lightning.nets import RegistrationNet
from rdmm_lightning.nets.heads import PreWeightNet
from rdmm_lightning.options import (
    AffineInit,
    AffineStage,
    Coordinates,
    HMode,
    InferencePrecision,
    IntensityNormalization,
    LocalKernel,
    Model,
    NetInput,
    NetworkPrecision,
    Preset,
    PreWeightActivation,
    RefineOptimizer,
    Regularizer,
    Side,
    Similarity,
    SolverMethod,
    SpacingMode,
    StrOption,
    either,
    values,
)
from rdmm_lightning.shooting import SolverOptions, make_shooting_unit
from rdmm_lightning.synthetic.synth3d import generate_knee_phantom

ENUMS = [getattr(O, name) for name in O.__all__ if name not in ("StrOption", "values", "either")]

EXPECTED = {
    Model: ("affine", "svf", "lddmm", "rdmm"),
    Similarity: ("ssd", "ncc", "lncc", "mk-lncc", "mi"),
    Regularizer: ("optimized", "predefined"),
    SpacingMode: ("parity", "physical"),
    IntensityNormalization: ("percentile", "minmax", "none"),
    HMode: ("pde", "interpolate"),
    SolverMethod: ("rk4", "euler", "midpoint", "dopri5"),
    RefineOptimizer: ("lbfgs", "adam"),
    AffineInit: ("identity", "com"),
    NetInput: ("full", "low"),
    PreWeightActivation: ("softplus", "relu"),
    NetworkPrecision: ("float32", "bfloat16"),
    InferencePrecision: ("auto", "float32", "bfloat16"),
    LocalKernel: ("box", "gaussian"),
    Coordinates: ("lps", "ras"),
    Side: ("left", "right"),
    AffineStage: ("net", "opt", "none"),
    Preset: ("brain", "lung", "knee", "synthetic"),
}


def test_values_are_the_strings_users_type():
    assert set(ENUMS) == set(EXPECTED)
    for option, expected in EXPECTED.items():
        assert issubclass(option, StrOption)
        assert values(option) == expected
        assert all(type(v) is str for v in values(option))  # plain strings (YAML, checkpoints)


@pytest.mark.parametrize("option", ENUMS, ids=lambda e: e.__name__)
def test_round_trip_from_strings(option):
    for member in option:
        text = member.value
        assert option(text) is member
        assert option(str(member)) is member
        assert member == text and text == member and hash(member) == hash(text)
        assert str(member) == f"{member}" == f"{member:s}" == text
        assert json.dumps(member) == json.dumps(text)
        assert pickle.loads(pickle.dumps(member)) is member
        assert {text: 1}[member] == 1 and member in values(option)
    with pytest.raises(ValueError):
        option("no-such-option")


def test_subsets():
    assert values(Model.deformable()) == ("svf", "lddmm", "rdmm")
    assert [m.is_deformable for m in Model] == [False, True, True, True]
    assert values(SolverMethod.fixed_step()) == ("rk4", "euler", "midpoint")
    assert values(SolverMethod.adaptive()) == ("dopri5",)
    assert set(SolverMethod.fixed_step()) | set(SolverMethod.adaptive()) == set(SolverMethod)
    assert not set(SolverMethod.fixed_step()) & set(SolverMethod.adaptive())


def test_either():
    assert either(LocalKernel) == "'box' or 'gaussian'"
    assert either(Model) == "'affine', 'svf', 'lddmm' or 'rdmm'"
    assert either(SolverMethod.adaptive()) == "'dopri5'"


def test_public_tuples_derive_from_the_enums():
    from rdmm_lightning.losses import SIMILARITY_NAMES
    from rdmm_lightning.models.hparams import SPACING_MODES as MODEL_SPACING_MODES
    from rdmm_lightning.models.refine import REFINE_OPTIMIZERS
    from rdmm_lightning.nets.affine_net import AFFINE_INITS
    from rdmm_lightning.optimize import REGISTRATION_MODELS, REGULARIZERS
    from rdmm_lightning.pipeline.pair import NORMALIZE_MODES, SPACING_MODES
    from rdmm_lightning.pipeline.transform import COORDINATES
    from rdmm_lightning.shooting import MODELS
    from rdmm_lightning.shooting.rdmm import H_MODES
    from rdmm_lightning.shooting.solver import ADAPTIVE_METHODS, FIXED_STEP_METHODS

    assert MODELS == values(Model.deformable())
    assert REGISTRATION_MODELS == values(Model)
    assert SIMILARITY_NAMES == values(Similarity)
    assert REGULARIZERS == values(Regularizer)
    assert SPACING_MODES == MODEL_SPACING_MODES == values(SpacingMode)
    assert NORMALIZE_MODES == values(IntensityNormalization)
    assert H_MODES == values(HMode)
    assert FIXED_STEP_METHODS + ADAPTIVE_METHODS == values(SolverMethod)
    assert REFINE_OPTIMIZERS == values(RefineOptimizer)
    assert AFFINE_INITS == values(AffineInit)
    assert COORDINATES == values(Coordinates)


def test_every_name_builds_its_object():
    for name in Similarity:
        assert similarity_from_name(name.value) is not None
        assert type(similarity_from_name(name)) is type(similarity_from_name(name.value))
    for model in Model.deformable():
        assert make_shooting_unit(model.value, sigmas=[0.1]).model == model.value
    for method in SolverMethod:
        assert SolverOptions(method.value).method == method


def _literal_option_sets(path: Path) -> list[str]:
    """Tuple/list/set literals in ``path`` that spell a whole option set (or a named subset)."""
    sets = {frozenset(values(option)): option.__name__ for option in ENUMS}
    sets[frozenset(values(Model.deformable()))] = "Model.deformable()"
    sets[frozenset(values(SolverMethod.fixed_step()))] = "SolverMethod.fixed_step()"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2:
            words = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            if len(words) == len(node.elts) and frozenset(map(str, words)) in sets:
                found.append(f"{path}:{node.lineno}: {words} (use {sets[frozenset(words)]})")
    return found


def test_no_bare_tuple_of_an_option_set():
    """Library, data modules and benchmarks take option sets from the enums (registries keyed by
    the names are dicts, not checked). Negative control: a literal tuple is found."""
    root = Path(__file__).resolve().parents[1]
    files = [
        *sorted((root / "rdmm_lightning").rglob("*.py")),
        *sorted((root / "datamodules").rglob("*.py")),
        *sorted((root / "benchmarks").rglob("*.py")),
        root / "train.py",
    ]
    found = [hit for path in files for hit in _literal_option_sets(path)]
    assert not found, "\n".join(found)


def test_bare_tuple_check_has_teeth(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        'MODELS = ("svf", "lddmm", "rdmm")\nSIM = ["ssd", "ncc", "lncc", "mk-lncc", "mi"]\n'
    )
    assert len(_literal_option_sets(probe)) == 2


def _choice_actions(parser: argparse.ArgumentParser, prefix: str = ""):
    """``(command path and flag, choices)`` of every option with choices, sub-commands included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _choice_actions(sub, f"{prefix}{name} ")
        elif action.choices is not None:
            yield f"{prefix}{'/'.join(action.option_strings) or action.dest}", action.choices


def test_every_cli_choice_list_comes_from_an_enum():
    from rdmm_lightning.cli.main import build_parser

    found = dict(_choice_actions(build_parser()))
    by_values = {values(option): option for option in ENUMS}
    for flag, choices in found.items():
        assert tuple(choices) in by_values, f"rdmm {flag}: choices {choices} are no option enum"
    expected = {
        "register --model": Model,
        "register --similarity": Similarity,
        "register --regularizer": Regularizer,
        "data synth3d --sides": Side,
    }
    for flag, option in expected.items():
        assert tuple(found[flag]) == values(option), flag


def test_evaluate_help_lists_the_models():
    from rdmm_lightning.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = sub.choices["evaluate"].format_help()
    assert "affine|svf|lddmm|rdmm" in help_text


@pytest.mark.parametrize(
    "build, message",
    [
        (partial(LNCCLoss, kernel="tri"), "kernel must be 'box' or 'gaussian'; got 'tri'"),
        (
            partial(RegistrationNet, "rdmm", 2, [0.1], net_input="half"),
            "net_input must be 'full' or 'low'; got 'half'",
        ),
        (
            partial(PreWeightNet, 2, 2, activation="tanh"),
            "activation must be 'softplus' or 'relu'; got 'tanh'",
        ),
        (
            partial(generate_knee_phantom, 0, side="middle"),
            "side must be 'left' or 'right'; got 'middle'",
        ),
        (
            partial(SolverOptions, "rk45"),
            "solver method must be one of ('rk4', 'euler', 'midpoint', 'dopri5'); got 'rk45'",
        ),
        (
            partial(make_shooting_unit, "affine", sigmas=[0.1]),
            "model must be one of ('svf', 'lddmm', 'rdmm'); got 'affine'",
        ),
    ],
)
def test_messages_list_the_values(build, message):
    """The messages read as before the enums (values listed in the same words and order)."""
    with pytest.raises(ValueError) as err:
        build()
    assert str(err.value) == message
