"""``python -m pytest_reynard_db`` and ``reynard-migrate``: the command line.

``main`` imports the command (``cli.run``) where a Ctrl-C is caught: one that lands
while the command's own modules import, before ``run`` can take it, is the same one line
as later, not a traceback.
"""

import sys


def main() -> None:
    """Console-script entry point (``reynard-migrate``)."""
    try:
        from .cli import run
    except KeyboardInterrupt:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the first one is acted on (cli.run)
        sys.stderr.write("reynard-migrate: interrupted\n")
        exec("pass")  # a KeyboardInterrupt in exec'd code would end python -m by SIGINT
        raise SystemExit(130) from None
    run()


if __name__ == "__main__":
    main()
