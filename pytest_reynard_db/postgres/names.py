"""The names of the databases the harness makes, and how it knows them again.

PostgreSQL keeps the first 63 bytes of an identifier and drops the rest without a
word: two long names would then be one database. Every name made here goes through
``pg_name``, the one rule for it. The names:

- a run's database: ``test_<db>_<run id>_<worker>_<purpose><n>`` (``run_database``;
  ``run_of`` reads the run back, to drop a dead run's databases);
- a template: ``test_tpl_<db>_<digest>`` (``template_name``), built under
  ``<template>_building`` (``building_name``) and renamed once complete;
- a check's scratch database: ``test_check_<db>_<purpose>_<random>`` (``scratch_name``).
"""

from __future__ import annotations

import hashlib
import re
import secrets

#: PostgreSQL's identifier length (``NAMEDATALEN - 1``), in bytes.
MAX_IDENTIFIER = 63
#: On a server we did not start, only databases named so are created.
TEST_PREFIX = "test_"
TEMPLATE_PREFIX = f"{TEST_PREFIX}tpl_"
BUILDING_SUFFIX = "_building"
SCRATCH_PREFIX = f"{TEST_PREFIX}check_"
#: A run's database (``run_database``).
RUN_DATABASE = re.compile(r"test_[a-z0-9_]+?_(?P<run>[0-9a-f]{8})_(?:main|gw[0-9]+)_[a-z]+[0-9]+")


def pg_name(stem: str, suffix: str = "") -> str:
    """``stem`` + ``suffix`` as a name PostgreSQL keeps as is: lower case, ``[a-z0-9_]``,
    at most 63 bytes. A longer stem is cut and ends with a hash of itself (two long
    stems stay two names); ``suffix`` (already clean) is always kept whole."""
    clean = re.sub(r"[^a-z0-9_]", "_", stem.lower())
    room = MAX_IDENTIFIER - len(suffix)
    if len(clean) > room:
        clean = clean[: room - 9] + "_" + hashlib.sha1(clean.encode()).hexdigest()[:8]
    return clean + suffix


def template_name(database: str, digest: str) -> str:
    """The template of registry database ``database`` whose tree hashes to ``digest``."""
    return pg_name(f"{TEMPLATE_PREFIX}{database}_{digest}")


def building_name(template: str) -> str:
    """The name ``template`` is migrated under until it is complete."""
    return pg_name(template, BUILDING_SUFFIX)


def run_database(database: str, run_id: str, worker: str, purpose: str, number: int) -> str:
    """A run's database: the run, worker and purpose kept whole (``run_of`` reads them)."""
    return pg_name(f"{TEST_PREFIX}{database}", f"_{run_id}_{worker}_{purpose}{number}")


def run_of(database: str) -> str | None:
    """The run id a database name carries, if it is one of a run's databases."""
    match = RUN_DATABASE.fullmatch(database)
    return match.group("run") if match else None


#: How many projects a template's comment names (the latest users).
PROJECTS_KEPT = 8


def comment_projects(comment: str | None) -> list[str]:
    """The projects a template's ``COMMENT`` names (``shared.RunPresence.mark_used``)."""
    found = re.search(r"; projects ([0-9a-f ]+)", comment or "")
    return found.group(1).split() if found else []


def run_comment(run_id: str) -> str:
    """The ``COMMENT`` a run's database carries on a server others use: what marks it
    as made by the harness (a name alone could be anyone's)."""
    return f"reynard-db run {run_id}"


def scratch_name(database: str, purpose: str) -> str:
    """A check's throw-away database, ``test_check_<database>_<purpose>_<random>``."""
    return pg_name(f"{SCRATCH_PREFIX}{database}_{purpose}", f"_{secrets.token_hex(4)}")
