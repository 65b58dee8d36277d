#!/usr/bin/env python3
"""Create every missing database and upgrade it to heads (``reynard-migrate setup``)."""

import sys

from pytest_reynard_db.cli import main

if __name__ == "__main__":
    sys.exit(main(["setup", *sys.argv[1:]]))
