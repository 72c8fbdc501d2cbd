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


def test_serve_refuses_sqlite_where_several_replicas_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped Deployment sets MEDLEY_REQUIRE_SHARED_DATABASE: SQLite there is one line and exit 2."""
    import typer

    from api.cli import serve

    app = typer.Typer()
    app.command()(serve)
    monkeypatch.setenv("MEDLEY_DATABASE_URL", f"sqlite+pysqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("MEDLEY_REQUIRE_SHARED_DATABASE", "true")
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("MEDLEY_DATABASE_URL: several API replicas cannot share SQLite")
    with pytest.raises(ValueError, match="cannot share SQLite"):
        Settings(database_url="sqlite://", require_shared_database=True)
    assert Settings(database_url="postgresql://u@h/db", require_shared_database=True).database_url.startswith(
        "postgresql+psycopg://")


def test_the_shipped_api_deployment_requires_a_shared_database() -> None:
    import yaml

    docs = list(yaml.safe_load_all((Path(__file__).resolve().parents[2] / "k8s" / "api.yaml").read_text()))
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert deployment["spec"]["replicas"] > 1
    assert env["MEDLEY_REQUIRE_SHARED_DATABASE"]["value"] == "true"
    assert env["MEDLEY_DATABASE_URL"]["valueFrom"]["secretKeyRef"].get("optional", False) is False
