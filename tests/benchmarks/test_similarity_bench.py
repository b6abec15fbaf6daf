"""``benchmarks/similarity.py``: the table of a tiny run and a bad grid."""

from __future__ import annotations

import pytest

from benchmarks.similarity import LOSSES, main


def test_table_has_a_row_per_loss_and_grid(capsys):
    main(["--repeats", "1", "--grids", "16x16", "8x10x10"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    body = rows[1:]  # below the header
    assert len(body) == 2 * len(LOSSES)
    for row in body:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] in ("16x16", "8x10x10")
        assert float(cells[2]) > 0 and float(cells[3]) > 0


def test_bad_grid_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["--grids", "16x"])
    assert "grid must look like" in capsys.readouterr().err
