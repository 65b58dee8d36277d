"""The silent copy of an ini that env.py's ``fileConfig`` reads (``env_run.silent_ini``),
made by several processes at once: two pytest sessions starting together once failed
with ``FileNotFoundError`` (both wrote one scratch file, the second found it renamed)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from pytest_reynard_db.migration.env_run import silent_ini

INI = """\
[alembic]
script_location = %(here)s/alembic
; {token}

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = INFO
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
formatter = generic

[formatter_generic]
format = %(message)s
"""


def race(ini: Path, callers: int = 8) -> tuple[list[Path], list[BaseException]]:
    """``silent_ini(ini)`` from ``callers`` threads let go at once: what each got or raised."""
    start = threading.Barrier(callers)
    made: list[Path] = []
    errors: list[BaseException] = []

    def make() -> None:
        start.wait()
        try:
            made.append(silent_ini(ini))
        except BaseException as exc:  # what the race raised, to report
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return made, errors


def test_many_at_once_each_get_the_whole_file(tmp_path: Path) -> None:
    for round_ in range(20):  # a new content each round: nobody finds it made already
        ini = tmp_path / f"alembic{round_}.ini"
        ini.write_text(INI.format(token=uuid.uuid4().hex))
        made, errors = race(ini)
        assert errors == [], errors
        [target] = set(made)
        text = target.read_text()
        assert "script_location = %(here)s/alembic" in text
        assert "NullHandler" in text and "StreamHandler" not in text
        assert not list(target.parent.glob(f"*{target.stem}*.tmp"))  # no scratch left behind
