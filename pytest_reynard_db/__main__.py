"""``python -m pytest_reynard_db``: the same CLI as ``reynard-migrate``."""

from .cli import run

run()
