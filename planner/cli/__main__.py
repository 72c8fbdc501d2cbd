"""``python -m planner.cli``: the ``medley`` command line."""

from planner.cli.main import main

main()
