"""``medley token create|revoke`` and the settings ``medley serve`` starts with."""

from __future__ import annotations

from pathlib import Path

import pytest
from platformdirs import user_data_dir
from typer.testing import CliRunner

from api.auth import authenticate
from api.cli import token_app
from api.db import Database
from api.settings import Settings


def test_token_create_prints_a_working_token_and_revoke_kills_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite+pysqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("MEDLEY_DATABASE_URL", url)
    runner = CliRunner()
    result = runner.invoke(token_app, ["create", "--team", "platform", "--role", "admin"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("mdl_")
    db = Database(url)
    try:
        with db.read() as s:
            who = authenticate(s, token)
        assert who is not None and who.team == "platform" and who.role.value == "admin"
        assert runner.invoke(token_app, ["revoke", who.token_id]).exit_code == 0
        with db.read() as s:
            assert authenticate(s, token) is None
        assert runner.invoke(token_app, ["revoke", who.token_id]).exit_code == 1
    finally:
        db.dispose()
    bad = runner.invoke(token_app, ["create", "--team", "x", "--role", "root"])
    assert bad.exit_code != 0


def test_default_database_is_sqlite_in_the_user_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MEDLEY_DATABASE_URL", raising=False)
    url = Settings().database_url
    assert url == f"sqlite+pysqlite:///{Path(user_data_dir('medley', appauthor=False)) / 'medley.db'}"
    monkeypatch.setenv("MEDLEY_DATABASE_URL", "postgresql://u:p@127.0.0.1:5432/medley")
    assert Settings().database_url == "postgresql+psycopg://u:p@127.0.0.1:5432/medley"
