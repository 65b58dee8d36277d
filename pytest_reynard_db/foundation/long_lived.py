"""What a process has made by the time its work begins, kept out of the cyclic garbage
collector's sight (``gc.freeze``).

A pytest run or a ``reynard-migrate`` command imports pytest, SQLAlchemy, Alembic and
their plugins before its first test or verb: some 100,000 objects that live until the
process ends. Each full collection walks them again, and so does the interpreter's
exit, which collects as it empties the modules. Measured on this repository's trees: a
bare pytest spent ~160 ms of its 0.6 s so, ``reynard-migrate check main`` ~120 ms of 1 s.

``gc.freeze`` moves every object tracked now to a permanent generation that collections
skip; objects made later (the tests', the checks') are collected as before, and a frozen
object whose references all go is still freed. It is CPython's own remedy for this.
What is given up: a reference cycle among those early objects, if one ever becomes
garbage, is not freed until the process ends. Our forked children (the run's agent, the
check items' spares) freeze what they inherit at once, as CPython's documentation
advises for a fork without exec.

Once per process: pytest run in-process (``pytester``) freezes in its first run only,
so the repeated runs of a long suite do not each keep what they leave. Told by what is
frozen, not by a flag of ours: pytester unloads the modules a run imported, this one
too where the outer run has not loaded the plugin (``-p no:reynard_db``), and a flag
was new again at each run (each froze what the ones before it left).
"""

from __future__ import annotations

import gc


def freeze_what_lives_on() -> None:
    """Freeze what the process tracks now (``gc.freeze``), once: not where objects are
    frozen already (by an earlier run in this process, or by its owner), nor where the
    collector is off (a conftest may turn it off: a run freezes once they are imported):
    the process's owner wants no change."""
    if gc.get_freeze_count() or not gc.isenabled():
        return
    gc.freeze()
