"""What every other part of the package stands on, and which imports none of them: the
errors and their exit codes, URLs (parsed, masked, as libpq reads them), how messages and
paths are shown, files written whole, file locks that say who holds them, signals, and
the registry of a project's databases with its settings.

The lowest layer: ``postgres/`` and ``guard/`` build on it, then ``migration/``,
``provisioning/``, ``checks/``, and the two fronts, ``cli/`` and ``plugin/``.
"""
