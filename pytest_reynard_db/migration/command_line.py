"""What ``alembic`` itself hands ``env.py`` as ``config.cmd_opts``: its own parser's namespace
for the command a verb stands for.

An ``env.py`` reads the command line it was run with: ``context.get_x_argument()`` (the
documented way to pass ``alembic -x seed=true upgrade head``) reads ``cmd_opts.x`` whenever
``cmd_opts`` is set, and Alembic's cookbook hook "don't generate empty migrations" tests
``config.cmd_opts.autogenerate``. Built by Alembic's ``CommandLine`` parser, the namespace
has every attribute plain ``alembic`` would give, so such an ``env.py`` runs under our verbs
and checks as under ``alembic``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import cache

from alembic.config import CommandLine


@cache
def _parser() -> argparse.ArgumentParser:
    return CommandLine(prog="alembic").parser


def alembic_cmd_opts(
    command: Sequence[str],
    x_arguments: Sequence[str] = (),
    *,
    ini: str | None = None,
    quiet: bool = False,
) -> argparse.Namespace:
    """``alembic [-c INI] [-q] [-x ARG]... COMMAND...`` as Alembic's parser reads it;
    ``command``: the subcommand and its arguments (``("upgrade", "heads")``,
    ``("revision", "--autogenerate", "--message=add y")``, ``("check",)``)."""
    argv: list[str] = []
    if ini is not None:
        argv.append(f"--config={ini}")
    if quiet:
        argv.append("--quiet")
    parsed = _parser().parse_args([*argv, *command])
    # set, not parsed: argparse reads '' as a missing value, '=v' as 'v' and '-5' as an option
    parsed.x = list(x_arguments) or None
    return parsed
