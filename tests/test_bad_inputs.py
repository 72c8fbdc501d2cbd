"""The bad-input catalogue (``benchmarks/bad_input_cases.py``), one test per case: every command line exits with
its code and one clear line, every HTTP request gets its 4xx problem+json; no traceback, no 5xx, nothing
silently accepted. ``benchmarks/bad_inputs.py`` runs the same cases and counts how they end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.bad_input_cases import CLI_CASES, HTTP_CASES, CliCase, HttpCase
from benchmarks.bad_inputs import HttpWorld, http_world, run_cli, run_http


def test_the_catalogue_is_large_and_its_ids_unique() -> None:
    ids = [f"cli:{c.id}" for c in CLI_CASES] + [f"http:{c.id}" for c in HTTP_CASES]
    assert len(ids) >= 150
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_command_line(case: CliCase) -> None:
    verdict = run_cli(case)
    assert verdict.kind == "clear", verdict.detail


@pytest.fixture(scope="module")
def world() -> Iterator[HttpWorld]:
    with http_world() as w:
        yield w


@pytest.mark.parametrize("case", HTTP_CASES, ids=lambda c: c.id)
def test_http(case: HttpCase, world: HttpWorld) -> None:
    verdict = run_http(case, world)
    assert verdict.kind == "clear", verdict.detail
