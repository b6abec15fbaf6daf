"""Run every command of the documentation's shell blocks (``make docs-check``, issue 16).

    python tools/docs_check.py [--list] [--only TEXT ...]

Reads the fenced ``bash``/``sh``/``shell`` blocks of ``README.md`` and ``docs/*.md`` (other
blocks, such as the ``rdmm --help``-style synopsis, are not commands), joins ``\\``
continuations, drops trailing ``# comments``, and looks each command up in :data:`COMMANDS`
(else :data:`RULES`), which says how it is checked (:class:`Mode`). A command found in neither,
or a table entry whose command is no longer in the documentation, fails the check: every new
line must be classified here.

Each command runs with ``bash`` in a fresh temporary working folder holding tiny real inputs
(two 16x24x24 knee phantoms from ``rdmm data synth3d`` as ``moving.nii.gz``, ``fixed.nii.gz``,
``moving_seg.nii.gz``, ``fixed_seg.nii.gz``) and a link to the repository's ``train.py`` (the
README's training commands run in a clone), with ``RDMM_DATA_DIR`` in the temporary folder, one
thread per process and ``WANDB_MODE=offline``. ``make TARGET`` runs the recipe lines of TARGET
(``make -n``) less those of ``setup`` (the installs, which CI runs before the tests). An entry's
``then`` (bash, the same shell right after the command, its output in ``$COMMAND_OUTPUT``)
checks what the command should have left behind. Exit code 0 when every command passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import enum
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/*.md")
"""The files whose shell blocks are checked (glob patterns relative to the repository)."""

SHELL_LANGUAGES = ("bash", "sh", "shell")
"""Info strings of the fenced blocks that hold commands."""

PLACEHOLDER = "..."
"""A last word ``...`` stands for "any arguments"; it is dropped before the ``extra``."""


# ----------------------------------------------------------------------------- extraction
@dataclass(frozen=True)
class Command:
    """One documented command: its text (continuations joined, comment dropped) and where."""

    text: str
    source: str  # "README.md:23"


def strip_comment(line: str) -> str:
    """``line`` without its shell comment: a ``#`` at the start or after whitespace, outside
    quotes and not escaped (``$#``, ``a#b``, ``"# x"`` and ``\\#`` stay)."""
    quote: str | None = None
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and quote != "'":
            i += 2
            continue
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
        i += 1
    return line.rstrip()


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^\s`]*)")


def extract_commands(markdown: str, name: str) -> list[Command]:
    """The commands of the fenced shell blocks of one Markdown text (``name`` labels them)."""
    commands: list[Command] = []
    fence: str | None = None  # the open fence, when inside a block
    shell = False
    pending: list[str] = []
    start = 0
    for number, line in enumerate(markdown.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence, shell = match.group(1), match.group(2).lower() in SHELL_LANGUAGES
            continue
        if match and match.group(1).startswith(fence) and not match.group(2):
            fence, pending = None, []
            continue
        if not shell:
            continue
        if not pending:
            start = number
        stripped = line.rstrip()
        if stripped.endswith("\\") and not stripped.endswith("\\\\"):
            pending.append(stripped[:-1].strip())
            continue
        text = strip_comment(" ".join([*pending, line.strip()]).strip())
        pending = []
        if text:
            commands.append(Command(text, f"{name}:{start}"))
    return commands


def documented_commands(repo: Path = REPO) -> list[Command]:
    """The commands of every file of :data:`DOCUMENTS`, in order."""
    files = [f for pattern in DOCUMENTS for f in sorted(repo.glob(pattern))]
    return [c for f in files for c in extract_commands(f.read_text(), str(f.relative_to(repo)))]


# ------------------------------------------------------------------------------ the table
class Mode(str, enum.Enum):
    """How a documented command is checked."""

    VERBATIM = "verbatim"  # run as written (placeholder words filled in, see Entry.substitute)
    SHORTENED = "shortened"  # run as written plus the entry's ``extra`` arguments
    COMPOSED = "composed"  # ``--cfg job`` appended: Hydra composes and checks, trains nothing
    SKIPPED = "skipped"  # not run; ``why`` says why


@dataclass(frozen=True)
class Entry:
    """How one command is checked; ``why`` is printed with it."""

    mode: Mode
    why: str = ""
    extra: tuple[str, ...] = ()
    then: str | None = None  # bash run afterwards in the same folder; must succeed
    placeholders: tuple[str, ...] = ()  # empty files made first (paths only checked to exist)
    substitute: tuple[tuple[str, str], ...] = ()  # (placeholder word, bash text) pairs


TINY_TRAINING = (
    "data.synthetic_options.num_train=2",
    "data.synthetic_options.num_val=1",
    "data.synthetic_options.num_test=1",
    "data.synthetic_options.size=48",
    "data.preprocessing.resize_shape=[32,32]",
    "data.num_workers=0",
    "data.pairs_per_epoch=null",
    "model.image_shape=[32,32]",
    "model.features=[4,8]",
    "model.solver_steps=2",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
)
"""A synth2d training of seconds: 2 training pairs of 48x48 at 32x32, one epoch, tiny UNets."""

SHORT_REGISTRATION = ("iterations=[4,3,2]", "affine_options.iterations=[4,3,2]")
"""A few L-BFGS iterations per scale, affine and deformable."""

RUN_PRINTED_INFER = (
    'cmd=$(grep -m1 -o "rdmm infer .*" "$COMMAND_OUTPUT") && echo "$cmd" && eval "$cmd"'
    " && test -f checkpoints/quickstart/*/infer_example/warped.nii.gz"
)
"""Run the ``rdmm infer`` command that the quickstart prints at its end."""

_TINY = "shortened by TINY_TRAINING (synth2d of 2 pairs, 32x32, 1 epoch)"
_NO_DATA = (
    "needs the OAI data and GPUs: composed only (`--cfg job`; on a machine without CUDA also "
    "`trainer.accelerator=cpu`, as the job's checks count the GPUs)"
)

_BRAIN_PAIR = (
    "needs a user's T1 pair; tests/pretrained/test_shipped_3d_models.py runs every shipped 3D "
    "model through `rdmm infer` on a head phantom of another orientation, spacing and size"
)

COMMANDS: dict[str, Entry] = {
    "make run": Entry(
        Mode.SHORTENED,
        f"recipe `python3 train.py`, {_TINY}; then its printed `rdmm infer` runs",
        TINY_TRAINING,
        RUN_PRINTED_INFER,
    ),
    "make test": Entry(Mode.SKIPPED, "CI runs it (.ci/run), and this check is one of its tests"),
    "pip install torch && pip install .": Entry(Mode.SKIPPED, "CI installs the package"),
    "rdmm register moving.nii.gz fixed.nii.gz --out out/ --model rdmm "
    "--source-label moving_seg.nii.gz --target-label fixed_seg.nii.gz": Entry(
        Mode.SHORTENED,
        "on the tiny phantoms, with SHORT_REGISTRATION (a few iterations per scale)",
        SHORT_REGISTRATION,
        "test -f out/warped_label.nii.gz && test -f out/composite.h5 && test -f out/metrics.json",
    ),
    "rdmm models": Entry(Mode.VERBATIM),
    "rdmm data synth2d --out shapes/ --pairs 2": Entry(
        Mode.VERBATIM, then="test -f shapes/pairs.csv"
    ),
    "rdmm infer --checkpoint synth2d-rdmm-net shapes/pair_000_source.nii.gz "
    "shapes/pair_000_target.nii.gz --out out/ --source-label shapes/pair_000_source_label.nii.gz "
    "--target-label shapes/pair_000_target_label.nii.gz": Entry(
        Mode.VERBATIM,
        "on the pairs of the `rdmm data synth2d` line (written into the inputs)",
        then="test -f out/warped.nii.gz && grep -q synth2d-rdmm-net out/metrics.json",
    ),
    "rdmm infer --checkpoint brain-t1-lddmm-net SOURCE_T1.nii.gz TARGET_T1.nii.gz "
    "--out out/": Entry(Mode.SKIPPED, _BRAIN_PAIR),
    "rdmm infer --checkpoint brain-t1-rdmm-net SOURCE_T1.nii.gz TARGET_T1.nii.gz --out out/ "
    "--refine-steps 20": Entry(Mode.SKIPPED, _BRAIN_PAIR),
    "pip install torch": Entry(Mode.SKIPPED, "CI installs torch (.ci/run)"),
    'pip install -e ".[dev]"': Entry(Mode.SKIPPED, "CI installs the package (make test: setup)"),
    "python train.py": Entry(
        Mode.SHORTENED,
        f"{_TINY} (its printed `rdmm infer` runs after `make run`)",
        TINY_TRAINING,
        "test -f checkpoints/quickstart/*/best.ckpt && test -f checkpoints/quickstart/*/last.ckpt",
    ),
    "python train.py experiment=synth2d_rdmm_net": Entry(
        Mode.SHORTENED,
        _TINY,
        TINY_TRAINING,
        "test -f checkpoints/synth2d_rdmm_net/*/last.ckpt",
    ),
    "RDMM_OAI_DIR=/data/oai python train.py experiment=oai_affine_net trainer=gpu": Entry(
        Mode.COMPOSED, _NO_DATA
    ),
    "python train.py experiment=oai_rdmm_net trainer=gpu model.affine_checkpoint=AFF.ckpt": Entry(
        Mode.COMPOSED, f"{_NO_DATA} (AFF.ckpt: an empty placeholder)", placeholders=("AFF.ckpt",)
    ),
    "python train.py --cfg job": Entry(
        Mode.VERBATIM, then='grep -q "^name: quickstart" "$COMMAND_OUTPUT" && test ! -e checkpoints'
    ),
    "python train.py -m model.omt_weight=0.05,0.1,0.2": Entry(
        Mode.SHORTENED,
        f"{_TINY} per job",
        TINY_TRAINING,
        "test -f checkpoints/quickstart/*/2/last.ckpt",
    ),
    "python train.py hydra.run.dir=runs/try1": Entry(
        Mode.SHORTENED, _TINY, TINY_TRAINING, "test -f runs/try1/last.ckpt"
    ),
    "python train.py --help": Entry(
        Mode.VERBATIM, then='grep -q "config groups" "$COMMAND_OUTPUT"'
    ),
    'eval "$(python train.py -sc install=bash)"': Entry(Mode.VERBATIM, then="complete -p python"),
    "rdmm train ...": Entry(
        Mode.SHORTENED,
        f"`...` dropped, {_TINY}",
        TINY_TRAINING,
        "test -f checkpoints/quickstart/*/last.ckpt",
    ),
}
"""Every documented command -> how it is checked (the key: the text as extracted)."""

RULES: tuple[tuple[re.Pattern[str], Entry], ...] = (
    (
        re.compile(r"rdmm (register|evaluate) (\S+ )*--print-config( .*)?"),
        Entry(
            Mode.VERBATIM,
            "a --print-config line: prints the resolved options, reads and writes nothing",
            then='grep -q "^model: " "$COMMAND_OUTPUT" && test ! -e out',
        ),
    ),
)
"""Classes of commands that are safe as written, for texts that are not in :data:`COMMANDS`."""


def classify(
    commands: Sequence[Command],
    table: dict[str, Entry] = COMMANDS,
    rules: Sequence[tuple[re.Pattern[str], Entry]] = RULES,
) -> tuple[list[tuple[Command, Entry]], list[str]]:
    """The commands with their entries (from ``table``, else the first rule whose pattern
    matches the whole text; each text once), and the problems: commands without an entry and
    table entries whose command is not documented."""
    found: list[tuple[Command, Entry]] = []
    problems: list[str] = []
    seen: set[str] = set()
    for command in commands:
        if command.text in seen:
            continue
        seen.add(command.text)
        entry = table.get(command.text) or next(
            (e for pattern, e in rules if pattern.fullmatch(command.text)), None
        )
        if entry is not None:
            found.append((command, entry))
        else:
            problems.append(
                f"{command.source}: unclassified command (add it to COMMANDS in "
                f"tools/docs_check.py): {command.text}"
            )
    problems += [
        f"tools/docs_check.py: COMMANDS entry no longer documented: {text}"
        for text in table
        if text not in seen
    ]
    return found, problems


# -------------------------------------------------------------------------------- running
@dataclass(frozen=True)
class Outcome:
    """The result of checking one command."""

    command: Command
    entry: Entry
    ok: bool
    seconds: float
    detail: str  # what ran, or why it failed


def make_recipe(target: str, env: dict[str, str], cwd: Path) -> list[str]:
    """The recipe lines of ``make TARGET`` (``make -n``) less those of ``make setup``."""

    def dry(name: str) -> list[str]:
        args = ["make", "--no-print-directory", "-n", "-f", str(REPO / "Makefile"), name]
        out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=True)
        return [line for line in out.stdout.splitlines() if line.strip()]

    setup = set(dry("setup"))
    return [line for line in dry(target) if line not in setup]


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (``trainer=gpu`` configs compose only then)."""
    import torch

    return torch.cuda.is_available()


def command_lines(command: str, entry: Entry, env: dict[str, str], cwd: Path) -> list[str]:
    """The bash lines that check ``command`` as ``entry`` says (empty when skipped)."""
    if entry.mode is Mode.SKIPPED:
        return []
    for word, text in entry.substitute:
        command = re.sub(rf"(?<!\S){re.escape(word)}(?!\S)", text.replace("\\", "\\\\"), command)
    words = command.split()
    if entry.mode is not Mode.VERBATIM and words[-1] == PLACEHOLDER:
        command = command[: -len(PLACEHOLDER)].rstrip()
    lines = make_recipe(words[1], env, cwd) if words[0] == "make" else [command]
    extra = list(entry.extra)
    if entry.mode is Mode.COMPOSED:
        # the job's checks count the GPUs; on a CPU machine they get the CPU instead
        extra += [] if cuda_available() else ["trainer.accelerator=cpu"]
        extra += ["--cfg", "job"]
    return [" ".join([line, *extra]) for line in lines]


def write_inputs(folder: Path, env: dict[str, str]) -> None:
    """``moving``/``fixed`` images and ``_seg`` label maps: two tiny knee phantoms; and
    ``shapes/``: two synthetic 2D pairs (as the README's ``rdmm data synth2d`` line writes them,
    so that the ``rdmm infer`` line after it finds them in its own fresh folder)."""
    pool = folder / "pool"
    subprocess.run(
        ["rdmm", "data", "synth3d", "--out", str(pool), "--subjects", "2", "--shape", "16",
         "24", "24", "--spacing", "4", "2", "2", "--sides", "right"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    for role, subject in (("moving", 1), ("fixed", 0)):
        name = f"sub-{subject:04d}_v0_right.nii.gz"
        shutil.copy(pool / "images" / name, folder / f"{role}.nii.gz")
        shutil.copy(pool / "labels" / name, folder / f"{role}_seg.nii.gz")
    shutil.rmtree(pool)
    subprocess.run(
        ["rdmm", "data", "synth2d", "--out", str(folder / "shapes"), "--pairs", "2"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip


def check_environment(data_dir: Path) -> dict[str, str]:
    """The environment of every command: tiny work, no network, the repository importable."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "OMP_NUM_THREADS": "1",
        "RDMM_NUM_THREADS": "1",
        "RDMM_DATA_DIR": str(data_dir),
        "MPLBACKEND": "Agg",
        "WANDB_MODE": "offline",
        "PYTHONUNBUFFERED": "1",
    }


_FAILED = "documented command failed with exit code"


def check_script(lines: Sequence[str], then: str | None) -> str:
    """One bash script: each line, its output appended to ``$COMMAND_OUTPUT``, stopping at the
    first that fails (with its exit code); then ``then`` in the same shell (it sees what the
    lines defined, e.g. a shell completion)."""
    run = [
        f'{{ {line}\n}} >>"$COMMAND_OUTPUT" 2>&1 || {{ rc=$?; echo "{_FAILED} $rc"; exit $rc; }}'
        for line in lines
    ]
    return "\n".join([*run, then or ""])


def _tail(path: Path, count: int = 15) -> list[str]:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return [line for line in text.splitlines() if line.strip()][-count:] or ["(no output)"]


def check_command(command: Command, entry: Entry, inputs: Path) -> Outcome:
    """Check one command in a fresh folder holding copies of ``inputs`` (see the module docs)."""
    began = time.monotonic()
    if entry.mode is Mode.SKIPPED:
        return Outcome(command, entry, True, 0.0, entry.why)
    with tempfile.TemporaryDirectory(prefix="docs_check_") as tmp:
        root = Path(tmp)
        work = root / "work"
        shutil.copytree(inputs, work)
        (work / "train.py").symlink_to(REPO / "train.py")
        for name in entry.placeholders:
            (work / name).touch()
        env = {**check_environment(root / "data"), "COMMAND_OUTPUT": str(root / "output.txt")}
        try:
            lines = command_lines(command.text, entry, env, work)
        except subprocess.CalledProcessError as exc:
            return Outcome(command, entry, False, 0.0, f"make -n failed: {exc.stderr.strip()}")
        if not lines:
            return Outcome(command, entry, False, 0.0, "nothing to run")
        with open(root / "check.txt", "w") as out:
            proc = subprocess.run(
                ["bash", "-o", "pipefail", "-c", check_script(lines, entry.then)],
                cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        seconds = time.monotonic() - began
        ran = " ; ".join(lines)
        if proc.returncode == 0:
            return Outcome(command, entry, True, seconds, ran)
        check = _tail(root / "check.txt")
        if check[-1].startswith(_FAILED):
            tail = _tail(root / "output.txt")
            detail = f"`{ran}` failed with exit code {proc.returncode}: {tail[-1]}\n    "
            detail += "\n    ".join(tail)
        else:
            detail = f"`{ran}` ran, but the check `{entry.then}` failed\n    " + "\n    ".join(
                check
            )
        return Outcome(command, entry, False, seconds, detail)


def run_checks(checks: Iterable[tuple[Command, Entry]], report: bool = True) -> list[Outcome]:
    """Check each command in turn (inputs written once); ``report``: a line per command."""
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="docs_check_inputs_") as tmp:
        inputs = Path(tmp) / "inputs"
        inputs.mkdir()
        write_inputs(inputs, check_environment(Path(tmp) / "data"))
        for command, entry in checks:
            outcome = check_command(command, entry, inputs)
            outcomes.append(outcome)
            if report:
                status = "ok  " if outcome.ok else "FAIL"
                print(f"{status} {outcome.seconds:6.1f}s {entry.mode.value:9s} {command.text}")
                print(f"      {outcome.detail}", flush=True)
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/docs_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="print the classification only")
    parser.add_argument(
        "--only", nargs="+", metavar="TEXT", help="check the commands containing one of TEXT"
    )
    args = parser.parse_args(argv)
    checks, problems = classify(documented_commands())
    if args.only:
        checks = [(c, e) for c, e in checks if any(t in c.text for t in args.only)]
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    if args.list:
        for command, entry in checks:
            print(f"{entry.mode.value:9s} {command.source:14s} {command.text}")
            print(f"{'':25s}{entry.why or 'as written'}")
        return 1 if problems else 0
    began = time.monotonic()
    outcomes = run_checks(checks)
    failed = [o for o in outcomes if not o.ok]
    print(
        f"{len(outcomes) - len(failed)} of {len(outcomes)} documented commands passed, "
        f"{len(problems)} classification problem(s), {time.monotonic() - began:.0f} s"
    )
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
