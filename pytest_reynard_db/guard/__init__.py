"""The production guard: while armed, no connection reaches a database the harness did not create.

A convention (export the right variable, set ``sqlalchemy.url``) holds only as
long as every ``env.py`` honours it; many read their own variable or build
their own engine. So the guard sits where every connection passes (``hooks``)
and decides on the *final* parameters, completed as the driver completes them
(``target``): after the URL's query string, a conninfo string, a service file
and libpq's ``PG*`` environment defaults. ``core`` holds the allow-list and the
decision; ``migration`` what env.py may reach while the harness migrates (while a
check migrates, its throw-away database only, whatever the dialect). Otherwise
non-PostgreSQL engines (an application's SQLite test engine) pass untouched.
"""

from ..foundation.errors import GuardRefused
from .core import (
    COMMON_URL_VARIABLES,
    GUARD,
    HARNESS_CLUSTER_NAME,
    Guard,
    hidden_variables,
    redirect_note,
)
from .target import Endpoint, Target, target_of, targets_of, url_target

__all__ = [
    "COMMON_URL_VARIABLES",
    "GUARD",
    "HARNESS_CLUSTER_NAME",
    "Endpoint",
    "Guard",
    "GuardRefused",
    "Target",
    "hidden_variables",
    "redirect_note",
    "target_of",
    "targets_of",
    "url_target",
]
