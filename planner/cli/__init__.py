"""The ``medley`` command line: parses, calls the planner's stages and renders; no planning here."""

from planner.cli.main import app, main

__all__ = ["app", "main"]
