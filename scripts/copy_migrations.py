#!/usr/bin/env python3
"""Copy each production tree into its e2e mirror (``reynard-migrate copy``)."""

import sys

from pytest_reynard_db.cli import main

if __name__ == "__main__":
    sys.exit(main(["copy", *sys.argv[1:]]))
