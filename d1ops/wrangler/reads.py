"""Reads through wrangler that return the SQL layer's values: an environment's schema, its tables' row counts.
(The SQL layer itself, d1ops/sql/, starts no process.)"""

from __future__ import annotations

from d1ops.project.config import Environment
from d1ops.sql.schema import SCHEMA_READ, DatabaseSchema, count_rows_sql, counts_from, schema_from
from d1ops.wrangler.runner import Wrangler


def read_schema(wrangler: Wrangler, env: Environment) -> DatabaseSchema:
    """The schema objects and every foreign key of an environment's database: one wrangler process."""
    return schema_from(wrangler.execute(env, command=SCHEMA_READ))


def count_rows(wrangler: Wrangler, env: Environment, tables: list[str]) -> dict[str, int]:
    """Row counts of these tables: one wrangler process."""
    if not tables:
        return {}
    return counts_from(wrangler.execute(env, command=count_rows_sql(tables)), tables)
