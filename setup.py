"""Everything is in pyproject.toml but one file: ``pytest_reynard_db_guard.pth``, which
must land in site-packages itself (as pytest-cov's ``pytest-cov.pth`` does), so that
every Python child of a guarded run is guarded (``pytest_reynard_db.child_guard``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "pytest_reynard_db_guard.pth"


class BuildPyWithPth(build_py):
    """``build_py``, plus the ``.pth`` at the top of what is installed (the wheel's root,
    in a regular and in an editable install alike)."""

    def run(self) -> None:
        super().run()
        self.copy_file(str(Path(__file__).with_name(PTH)), str(Path(self.build_lib) / PTH))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


class EditableWheelWithPth(editable_wheel):
    """``pip install -e``: the ``.pth`` written beside the editable install's own (its
    strategies put only what lies in packages; setuptools' private hook, so a setuptools
    without it installs without the ``.pth``)."""

    def _select_strategy(self, *args: Any, **kwargs: Any) -> Any:
        return _WithPth(super()._select_strategy(*args, **kwargs))


class _WithPth:
    def __init__(self, strategy: Any) -> None:
        self.strategy = strategy

    def __call__(self, wheel: Any, files: Any, mapping: Any) -> None:
        self.strategy(wheel, files, mapping)
        wheel.writestr(PTH, Path(__file__).with_name(PTH).read_bytes())

    def __enter__(self) -> _WithPth:
        self.strategy.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.strategy.__exit__(*exc)


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
