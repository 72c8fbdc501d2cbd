"""``medley serve`` and ``medley token``: the REST API and its credentials."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import typer

from api.auth import ApiRole
from planner.cli.common import fail

if TYPE_CHECKING:
    from api.settings import Settings

token_app = typer.Typer(help="API tokens: create and revoke bearer tokens.", no_args_is_help=True)


def load_settings() -> Settings:
    """The API's settings from MEDLEY_* variables; one line naming the variable and exit 2 when one is bad."""
    from pydantic import ValidationError

    from api.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ()))
        reason = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        fail(f"MEDLEY_{field.upper()}: {reason}" if field else reason)


def serve(host: str = typer.Option("127.0.0.1", help="address to listen on"),
          port: int = typer.Option(8080, min=1, max=65535, help="TCP port (1 to 65535)"),
          access_log: bool = typer.Option(True, help="log one line per request (method, path, status)")) -> None:
    """Start the REST API (settings from MEDLEY_* variables; SQLite in the user's data dir by default)."""
    import uvicorn

    from api.app import create_app

    settings = load_settings()
    target = (f"applies go to {settings.kubeconfig or 'the in-cluster service account or ~/.kube/config'}"
              if settings.provisioner == "kubernetes" else "applies are only recorded")
    typer.echo(f"medley api on http://{host}:{port} (database: {_safe_url(settings.database_url)}; {target})",
               err=True)
    app = create_app(settings)
    # The app, schemas and catalog live as long as the process: freezing them keeps the collector from
    # scanning them again, and rarer young collections mean fewer pauses on the read path.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    # access_log stays on: it logs method, path and status only, never the Authorization header.
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=access_log)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@token_app.command("create")
def create(team: str = typer.Option(..., help="team the token acts for"),
           role: ApiRole = typer.Option(ApiRole.VIEWER, help="viewer, planner or admin"),
           name: str = typer.Option("", help="a note to tell tokens apart")) -> None:
    """Create a bearer token and print it (it is shown only this once; only its hash is stored)."""
    from api import migrate
    from api.auth import create_token
    from api.db import Database

    settings = load_settings()
    db = Database(settings.database_url)
    try:
        migrate.upgrade(db.engine)
        with db.write() as s:
            try:
                secret, row = create_token(s, team, role, name)
            except ValueError as exc:
                fail(str(exc))
        typer.echo(f"token id {row.id} (team {team}, role {role.value})", err=True)
        typer.echo(secret)
    finally:
        db.dispose()


@token_app.command("revoke")
def revoke(token_id: str = typer.Argument(..., help="id printed by `medley token create`")) -> None:
    """Revoke a token by its id."""
    from api.auth import revoke_token
    from api.db import Database

    db = Database(load_settings().database_url)
    try:
        with db.write() as s:
            ok = revoke_token(s, token_id)
    finally:
        db.dispose()
    if not ok:
        fail(f"no live token {token_id!r}", code=1)
    typer.echo(f"revoked {token_id}")
