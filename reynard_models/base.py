"""Shared model helpers: the constraint naming convention and column types."""

from __future__ import annotations

import enum

from sqlalchemy import MetaData

#: Deterministic names for every index and constraint, so that migrations,
#: autogenerate and ``DROP CONSTRAINT`` all agree on them.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def make_metadata() -> MetaData:
    """Return a new MetaData that uses :data:`NAMING_CONVENTION`."""
    return MetaData(naming_convention=NAMING_CONVENTION)


def enum_values(enum_class: type[enum.Enum]) -> list[str]:
    """Store an Enum's *values* (``"fox"``), not its member names (``"FOX"``)."""
    return [member.value for member in enum_class]
