"""``bench/run.py --compare`` and ``--results``: the recorded table written whole, read
back, and a run's rows flagged when their ratio is more than 25% worse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.compare import (
    BEGIN,
    END,
    compare,
    read_recorded,
    render_comparison,
    render_recorded,
    write_recorded,
)
from bench.timing import Row, slowdown_row, speedup_row

ROOT = Path(__file__).resolve().parent.parent

RESULTS = """\
# Benchmark results

- preamble

## Rows that miss a target

prose
"""


def _rows(slow: float, fast: float) -> list[Row]:
    stair = slowdown_row("6 stairway 200 revs vs raw SQL floor", slow, 1.0, "raw SQL", 2.0)
    clone = speedup_row("1a fresh clone+drop vs re-migrate", 1.0, fast, "upgrade heads", 20.0)
    clone.note = "run-specific 0.80 s"
    return [stair, clone]


def test_the_table_is_written_whole_dated_and_read_back() -> None:
    text = write_recorded(RESULTS, render_recorded(_rows(2.0, 6.0), "2026-12-06"), "cmd")
    assert text.index(BEGIN) < text.index("## Rows that miss a target")
    recorded = read_recorded(text)
    assert sorted(recorded) == [
        "1a fresh clone+drop vs re-migrate",  # the bracketed note is not part of the key
        "6 stairway 200 revs vs raw SQL floor",
    ]
    assert recorded["6 stairway 200 revs vs raw SQL floor"].ratio == 2.0
    assert recorded["1a fresh clone+drop vs re-migrate"].measured == "2026-12-06"
    again = write_recorded(text, render_recorded(_rows(3.0, 6.0), "2026-12-07"), "cmd")
    assert again.count(BEGIN) == 1 and again.count(END) == 1  # replaced, not appended
    assert read_recorded(again)["6 stairway 200 revs vs raw SQL floor"].ratio == 3.0
    assert "prose" in again


@pytest.mark.parametrize(
    ("slow", "fast", "flagged"),
    [
        (2.4, 6.0, []),  # 1.2x worse: within the tolerance
        (2.6, 6.0, ["6 stairway 200 revs"]),  # ours/base: a larger ratio is worse
        (2.0, 4.5, ["1a fresh clone+drop"]),  # base/ours: a smaller speed-up is worse
        (1.0, 60.0, []),  # better is never flagged
    ],
)
def test_a_row_more_than_25_percent_worse_is_flagged(
    slow: float, fast: float, flagged: list[str]
) -> None:
    recorded = read_recorded(
        write_recorded(RESULTS, render_recorded(_rows(2.0, 6.0), "2026-12-06"), "cmd")
    )
    compared = compare(_rows(slow, fast), recorded)
    assert [c.row.name.split(" vs ")[0] for c in compared if c.worse] == flagged
    shown = render_comparison(compared)
    assert shown.count("WORSE") == len(flagged)
    assert "(2026-12-06)" in shown


def test_a_row_not_recorded_is_new_and_a_results_md_without_a_table_is_one_line() -> None:
    compared = compare(_rows(2.0, 6.0), {})
    assert not any(c.worse for c in compared)
    assert render_comparison(compared).count("new row") == 2
    with pytest.raises(ValueError, match="no recorded table"):
        read_recorded(RESULTS)


def test_results_refuses_a_partial_table() -> None:
    """The table is regenerated whole: ``--results`` with ``--rows`` or ``--quick`` is a
    usage error before anything runs."""
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--results", "--rows", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--results records every row" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("now", "flagged"),
    [
        (-0.05, False),  # still below the bare start
        (0.15, False),  # 0.23 of the baseline more: within a quarter of it
        (0.40, True),  # 0.48 of the baseline more: flagged
    ],
)
def test_a_row_recorded_below_zero_is_read_back_and_compared_by_difference(
    now: float, flagged: bool
) -> None:
    """A start recorded below a bare pytest's (a negative ``ours``, ratio -0.08x, as
    ``--results`` writes it for row 4's warm start) is read back; as a ratio of a
    negative has no meaning, it is flagged when it grew by more than a quarter of the
    baseline (``TOLERANCE``), and the change says so."""
    warm = slowdown_row("4 session start, warm", -0.08, 1.0, "testing.postgresql", 0.1)
    recorded = read_recorded(write_recorded(RESULTS, render_recorded([warm], "2026-12-07"), "cmd"))
    assert recorded["4 session start, warm"].ratio == -0.08
    (compared,) = compare([slowdown_row("4 session start, warm", now, 1.0, "t", 0.1)], recorded)
    assert compared.worse is flagged
    assert f"+{now + 0.08:.2f} of the baseline" in render_comparison([compared])
