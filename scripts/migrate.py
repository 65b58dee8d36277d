#!/usr/bin/env python3
"""The seed's unified migration manager, kept as a shim over ``reynard-migrate``.

python3 scripts/migrate.py upgrade ecs
python3 scripts/migrate.py create ecs --message "Add new feature"
python3 scripts/migrate.py history ecs
python3 scripts/migrate.py copy
"""

import sys

from pytest_reynard_db.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
