"""SQLAlchemy models of the Reynard backend.

Two independent declarative bases, one per database:

- :mod:`reynard_models.ecs` (``EcsBase.metadata``): the ECS world simulation
  database ``reynard_ecs``, migrated by ``alembic/ecs``.
- :mod:`reynard_models.main` (``MainBase.metadata``): the main application
  database ``reynard``, migrated by ``alembic/main``.

The Alembic trees are generated from these models; ``alembic check`` must find
no difference between a database at heads and the models.
"""

from reynard_models.base import NAMING_CONVENTION, make_metadata

__all__ = ["NAMING_CONVENTION", "make_metadata"]
