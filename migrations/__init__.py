"""Alembic revisions of Medley's database, shipped inside the package so an installed Medley can migrate."""
