"""Every command of the README's shell blocks runs (``tools/docs_check.py``, ``make docs-check``).

The fast tests cover the extractor, the classification (an unknown command fails) and the runner
on plain shell commands; the slow one runs the whole check as CI does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.docs_check import (
    COMMANDS,
    Command,
    Entry,
    Mode,
    check_command,
    check_environment,
    classify,
    command_lines,
    documented_commands,
    extract_commands,
    run_checks,
    strip_comment,
)

MARKDOWN = """\
Text with `make inline` is no command.

```bash
make run    # a comment
rdmm register a.nii.gz b.nii.gz --out out/ \\
    --model rdmm   # labels: optional

# a comment line
echo "# kept" 'a # kept' x#y \\# kept # dropped
```

```
rdmm register SOURCE TARGET --out DIR   (a synopsis: no language, not run)
```

```python
import os  # Python, not run
```
"""


def test_extractor_joins_continuations_and_drops_comments():
    commands = extract_commands(MARKDOWN, "T.md")
    assert [c.text for c in commands] == [
        "make run",
        "rdmm register a.nii.gz b.nii.gz --out out/ --model rdmm",
        "echo \"# kept\" 'a # kept' x#y \\# kept",
    ]
    assert [c.source for c in commands] == ["T.md:4", "T.md:5", "T.md:9"]


def test_strip_comment_keeps_quoted_and_escaped_hashes():
    assert strip_comment("# only a comment") == ""
    assert strip_comment('eval "$(python train.py -sc install=bash)"') == (
        'eval "$(python train.py -sc install=bash)"'
    )
    assert strip_comment("echo $# ${#a}  # n") == "echo $# ${#a}"


def test_every_documented_command_is_classified():
    checks, problems = classify(documented_commands())
    assert not problems, "\n".join(problems)
    texts = [c.text for c, _ in checks]
    assert "make run" in texts and "python train.py" in texts
    assert any(t.startswith("rdmm register ") for t in texts)
    for _, entry in checks:  # every skip says why
        assert entry.mode is not Mode.SKIPPED or entry.why


def test_an_unknown_command_and_a_stale_entry_fail_the_classification():
    """Negative control: a new README line must be added to the table, and a removed one too."""
    commands = [Command("make run", "R.md:1"), Command("rdmm new-thing --fast", "R.md:2")]
    table = {"make run": Entry(Mode.SKIPPED, "x"), "rdmm gone": Entry(Mode.SKIPPED, "y")}
    checks, problems = classify(commands, table)
    assert [c.text for c, _ in checks] == ["make run"]
    assert len(problems) == 2
    assert problems[0].startswith("R.md:2: unclassified command") and "new-thing" in problems[0]
    assert "no longer documented: rdmm gone" in problems[1]
    assert classify(documented_commands(), {**COMMANDS, "rdmm gone": Entry(Mode.SKIPPED)})[1]


def test_print_config_lines_are_classified_by_a_rule():
    commands = [
        Command("rdmm register --preset brain --print-config", "R.md:1"),
        Command("rdmm register a.nii.gz b.nii.gz --out o/ --preset lung --print-config", "R.md:2"),
        Command("rdmm register --preset brain", "R.md:3"),
    ]
    checks, problems = classify(commands, {})
    assert [c.source for c, e in checks if e.mode is Mode.VERBATIM] == ["R.md:1", "R.md:2"]
    assert len(problems) == 1 and problems[0].startswith("R.md:3: unclassified")


def test_make_targets_run_their_recipe_without_setup(tmp_path):
    env = check_environment(tmp_path / "data")
    lines = command_lines("make run", Entry(Mode.SHORTENED, extra=("seed=1",)), env, tmp_path)
    assert [line.split()[1:] for line in lines] == [["train.py", "seed=1"]]
    assert command_lines("make test", COMMANDS["make test"], env, tmp_path) == []


def _inputs(tmp_path: Path) -> Path:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.txt").write_text("a\n")
    return inputs


def test_runner_passes_a_command_that_does_what_its_check_says(tmp_path):
    inputs = _inputs(tmp_path)
    ok = check_command(
        Command("cp a.txt b.txt", "T.md:1"), Entry(Mode.VERBATIM, then="test -f b.txt"), inputs
    )
    assert ok.ok, ok.detail
    shortened = Entry(Mode.SHORTENED, extra=("x",), then='grep -qx "x" "$COMMAND_OUTPUT"')
    assert check_command(Command("echo ...", "T.md:2"), shortened, inputs).ok  # `...` dropped
    filled = Entry(
        Mode.VERBATIM, then='grep -qx "b xNAME" "$COMMAND_OUTPUT"', substitute=(("NAME", "b"),)
    )
    assert check_command(Command("echo NAME xNAME", "T.md:3"), filled, inputs).ok


def test_runner_fails_a_failing_command_or_an_unmet_check(tmp_path):
    """Negative controls: the exit code of the command and its ``then`` check both count."""
    inputs = _inputs(tmp_path)
    failed = check_command(
        Command("rdmm register missing.nii.gz a.txt --out out/", "T.md:1"),
        Entry(Mode.VERBATIM),
        inputs,
    )
    assert not failed.ok
    error = failed.detail.splitlines()[0].split("failed with exit code 2: ")[1]
    assert "missing.nii.gz" in error  # the command's own error line
    unmet = check_command(
        Command("cp a.txt b.txt", "T.md:2"), Entry(Mode.VERBATIM, then="test -f c.txt"), inputs
    )
    assert not unmet.ok and "the check `test -f c.txt` failed" in unmet.detail


@pytest.mark.slow
def test_every_readme_command_runs():
    checks, problems = classify(documented_commands())
    assert not problems, "\n".join(problems)
    failed = [
        f"{o.command.source}: {o.command.text}\n  {o.detail}"
        for o in run_checks(checks, report=False)
        if not o.ok
    ]
    assert not failed, "\n".join(failed)
