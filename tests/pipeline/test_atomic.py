"""One writer per output folder: the lock file of pipeline/atomic.py, with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rdmm_lightning.pipeline.atomic import lock_path, output_lock

HOLDER = textwrap.dedent(
    """
    import sys
    from rdmm_lightning.pipeline.atomic import output_lock
    with output_lock(sys.argv[1]) as path:
        print(path, flush=True)
        sys.stdin.read()  # hold the lock until the parent closes our stdin
    """
)


def _start_holder(out: Path) -> subprocess.Popen:
    """A second process that takes the lock of ``out`` and holds it until its stdin closes."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert holder.stdout.readline().strip() == str(lock_path(out))
    return holder


def test_a_second_process_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "new" / "out"  # not there yet: the lock lies in the nearest folder
    holder = _start_holder(out)
    try:
        assert lock_path(out).parent == tmp_path
        assert lock_path(out).read_text().strip() == str(holder.pid)
        with pytest.raises(ValueError, match=rf"another rdmm command \(pid {holder.pid}\)"):
            with output_lock(out):
                pass
        assert not (tmp_path / "new").exists()
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    assert not lock_path(out).exists()  # released
    with output_lock(out) as path:
        assert path.read_text().strip() == str(os.getpid())
    assert not path.exists()


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)
    lock_path(out).write_text(f"{dead.pid}\n")  # left behind by a killed command
    with output_lock(out) as path:
        assert path.read_text().strip() == str(os.getpid())
        with output_lock(out):  # re-entrant in one process
            pass
        assert path.exists()
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_folders_that_share_a_parent_have_their_own_locks(tmp_path):
    with output_lock(tmp_path / "a") as a, output_lock(tmp_path / "b") as b:
        assert a != b and a.parent == b.parent == tmp_path
