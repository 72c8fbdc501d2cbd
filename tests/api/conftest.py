"""Fixtures of the API tests; their code lives in ``apitest_client`` so test modules can import helpers by a
name no other test folder uses."""

from apitest_client import api, db_url, make_api, make_sqlite_api, pg_cluster, sqlite_url

__all__ = ["api", "db_url", "make_api", "make_sqlite_api", "pg_cluster", "sqlite_url"]
