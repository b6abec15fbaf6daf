"""``--threads N`` on every ``rdmm`` sub-command, ``--device auto|cpu|cuda[:N]``, and the
``RDMM_NUM_THREADS`` variable, end to end on tiny inputs."""

from __future__ import annotations

import json
import os

import pytest
import torch
from pytorch_lightning import Callback

from rdmm_lightning.cli.main import build_parser, main
from rdmm_lightning.runtime import ENV_VAR
from rdmm_lightning.training import run as training_run
from tests.pipeline.helpers import write_pair
from tests.training.helpers import tiny_overrides

FAST = [
    "--model",
    "svf",
    "iterations=[2]",
    "scales=[1.0]",
    "affine=false",
    "solver.num_steps=3",
]
CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _no_thread_variables(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.chdir(tmp_path)  # relative output names in the error cases


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return write_pair(tmp_path_factory.mktemp("threads"), 3)


def _register(pair, out, *extra: str) -> list[str]:
    return ["register", str(pair["source"]), str(pair["target"]), "--out", str(out), *extra]


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_every_subcommand_takes_threads():
    parser = build_parser()
    argvs = [
        ["register", "s", "t", "--out", "o"],
        ["infer", "--checkpoint", "c", "s", "t", "--out", "o"],
        ["warp", "--transform", "d", "--moving", "m", "--out", "o"],
        ["evaluate", "--model", "svf", "--pairs", "p.csv", "--out", "o"],
        ["data", "synth2d", "--out", "o"],
        ["data", "synth3d", "--out", "o", "--subjects", "1"],
        ["train"],
    ]
    for argv in argvs:
        assert parser.parse_args(argv + ["--threads", "3"]).threads == 3, argv
        assert parser.parse_args(argv).threads is None, argv
    for argv in argvs[:2] + argvs[3:4]:
        assert parser.parse_args(argv).device is None  # the config's (auto)
        assert parser.parse_args(argv + ["--device", "cuda:1"]).device == "cuda:1"


def test_register_runs_with_the_requested_threads(pair, tmp_path, capsys):
    """The count torch reports inside the run lands in metrics.json ("runtime")."""
    assert torch.get_num_threads() == 1  # tests/conftest.py
    assert main(_register(pair, tmp_path / "two", "--threads", "2", *FAST)) == 0
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["runtime"]["threads"] == 2 and metrics["config"]["threads"] == 2
    assert torch.get_num_threads() == 1  # the caller's count is restored
    # with two threads around it, --threads 1 runs on one
    torch.set_num_threads(2)
    assert main(_register(pair, tmp_path / "one", "--threads", "1", *FAST)) == 0
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert metrics["runtime"]["threads"] == 1 and torch.get_num_threads() == 2
    # automatic on this 20x22x16 grid: one thread; RDMM_NUM_THREADS overrides that
    assert main(_register(pair, tmp_path / "auto", *FAST)) == 0
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert metrics["runtime"]["threads"] == 1 and metrics["config"]["threads"] is None
    capsys.readouterr()


def test_environment_variable_and_precedence(pair, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "2")
    assert main(_register(pair, tmp_path / "env", *FAST)) == 0
    assert json.loads((tmp_path / "env" / "metrics.json").read_text())["runtime"]["threads"] == 2
    assert main(_register(pair, tmp_path / "arg", "--threads", "1", *FAST)) == 0
    assert json.loads((tmp_path / "arg" / "metrics.json").read_text())["runtime"]["threads"] == 1


def test_device_auto_and_cuda(pair, tmp_path, capsys):
    assert main(_register(pair, tmp_path / "auto", "--device", "auto", *FAST)) == 0
    metrics = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    want = "cuda" if CUDA else "cpu"
    assert metrics["config"]["device"] == want and metrics["runtime"]["device"].startswith(want)
    capsys.readouterr()
    if not CUDA:
        pairs = tmp_path / "pairs.csv"
        pairs.write_text(f"source,target\n{pair['source']},{pair['target']}\n")
        evaluate = ["evaluate", "--model", "svf", "--pairs", str(pairs), "--out", "o"]
        for argv in (
            _register(pair, tmp_path / "cuda", "--device", "cuda"),
            _register(pair, tmp_path / "cuda0", "--device", "cuda:0"),
            evaluate + ["--device", "cuda"],
            ["infer", "--checkpoint", "c", "s", "t", "--out", "o", "--device", "cuda"],
        ):
            assert main(argv) == 2, argv
            err = _error(capsys)
            assert f"error: --device {argv[-1]}: CUDA is not available" in err, err
        assert not (tmp_path / "cuda").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["register", "s", "t", "--out", "o"],
        ["infer", "--checkpoint", "c", "s", "t", "--out", "o"],
        ["warp", "--transform", "d", "--points", "p.csv", "--out", "o.csv"],
        ["evaluate", "--model", "svf", "--pairs", "p.csv", "--out", "o"],
        ["data", "synth2d", "--out", "o"],
        ["train"],
    ],
    ids=lambda a: a[0],
)
def test_bad_values_are_one_line_errors_with_exit_code_2(argv, capsys, monkeypatch):
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(SystemExit) as exc:
            main(argv + ["--threads", bad])
        assert exc.value.code == 2
        err = _error(capsys)
        assert "argument --threads: must be an integer >= 1" in err and repr(bad) in err
    if argv[0] in ("register", "infer", "evaluate"):
        with pytest.raises(SystemExit) as exc:
            main(argv + ["--device", "tpu"])
        assert exc.value.code == 2
        assert "argument --device: must be auto, cpu, cuda or cuda:N; got 'tpu'" in _error(capsys)
    monkeypatch.setenv(ENV_VAR, "many")
    assert main(argv) == 2
    err = _error(capsys)
    assert err.startswith(f"rdmm {argv[0]}: error: {ENV_VAR} must be an integer >= 1; got 'many'")


def test_train_py_threads_errors(capsys, monkeypatch):
    assert training_run.main(["--threads", "0"]) == 2
    assert _error(capsys) == "train.py: error: --threads must be an integer >= 1; got '0'"
    assert training_run.main(["--threads=x", "--cfg"]) == 2
    assert "--threads must be an integer >= 1; got 'x'" in _error(capsys)
    monkeypatch.setenv(ENV_VAR, "0")
    assert training_run.main(["trainer.max_epochs=1"]) == 2
    assert _error(capsys) == f"train.py: error: {ENV_VAR} must be an integer >= 1; got '0'"


def test_warp_and_data_with_threads(pair, tmp_path, capsys):
    out = tmp_path / "reg"
    assert main(_register(pair, out, *FAST)) == 0
    warped = tmp_path / "w.nii.gz"
    argv = ["warp", "--transform", str(out), "--moving", str(pair["source"]), "--out", str(warped)]
    assert main(argv + ["--threads", "2"]) == 0 and warped.is_file()
    assert torch.get_num_threads() == 1
    argv = ["data", "synth2d", "--out", str(tmp_path / "d"), "--pairs", "1", "--size", "48"]
    assert main(argv + ["--threads", "1"]) == 0
    assert (tmp_path / "d" / "pairs.csv").is_file()
    capsys.readouterr()


class ThreadProbe(Callback):
    """Records torch's thread count while training runs (on the class: Hydra builds it)."""

    seen: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        ThreadProbe.seen.append(torch.get_num_threads())


@pytest.mark.slow
def test_rdmm_train_runs_with_the_requested_threads(tmp_path, capsys, monkeypatch):
    """``rdmm train --threads 2``: the training steps run with 2 threads, and the count is
    exported (OMP_NUM_THREADS) for processes Lightning starts."""
    ThreadProbe.seen = []
    probe = f"+callbacks.probe._target_={__name__}.ThreadProbe"
    argv = ["train", "--threads", "2", *tiny_overrides(tmp_path / "data", tmp_path / "runs"), probe]
    assert main(argv) == 0
    capsys.readouterr()
    assert ThreadProbe.seen and set(ThreadProbe.seen) == {2}
    assert os.environ["OMP_NUM_THREADS"] == "2"  # monkeypatch restores the variable
