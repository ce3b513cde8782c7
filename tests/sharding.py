"""The rules that let the schema distribute by tenant (Citus, docs/scaling.md), as checks.

- `key_problems`: every table of tenant data (a `tenant_id` column) leads its primary key and each
  unique constraint or unique index with `tenant_id`, and its foreign keys to other tenant tables
  include `tenant_id` (both sides), read from pg_catalog after the migrations ran.
- `statement_problems`: every statement filters each tenant table it touches on `tenant_id`
  (compared with a value, or joined on `tenant_id` to a relation that is), and is anchored to one
  tenant: some `tenant_id` is compared with something other than another `tenant_id` column, or an
  INSERT names `tenant_id`. Parsed with PostgreSQL's own parser (pglast), not with patterns.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import asyncpg
from pglast import ast, enums, parse_sql

# -- keys ---------------------------------------------------------------------------------------

_TENANT_TABLES = """
SELECT c.oid::regclass::text AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
  AND EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
ORDER BY 1
"""
_ALL_TABLES = """
SELECT c.oid::regclass::text AS name,
       EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
               AND NOT a.attisdropped) AS has_tenant
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
ORDER BY 1
"""
# Primary keys, unique constraints and unique indexes: the first key column's name.
_UNIQUE_KEYS = """
SELECT i.indrelid::regclass::text AS tbl, i.indexrelid::regclass::text AS idx,
       (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = i.indrelid AND a.attnum = i.indkey[0]) AS lead,
       pg_get_indexdef(i.indexrelid) AS def
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND (i.indisunique OR i.indisprimary)
"""
_FOREIGN_KEYS = """
SELECT con.conrelid::regclass::text AS tbl, con.confrelid::regclass::text AS ref, con.conname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) k JOIN pg_attribute a
             ON a.attrelid = con.conrelid AND a.attnum = k)::text[] AS cols,
       ARRAY(SELECT a.attname FROM unnest(con.confkey) k JOIN pg_attribute a
             ON a.attrelid = con.confrelid AND a.attnum = k)::text[] AS ref_cols
FROM pg_constraint con JOIN pg_namespace n ON n.oid = con.connamespace
WHERE n.nspname = $1 AND con.contype = 'f'
"""


async def tenant_tables(conn: asyncpg.Connection, schema: str = "public") -> set[str]:
    """Tables with a `tenant_id` column."""
    return {r["name"] for r in await conn.fetch(_TENANT_TABLES, schema)}


async def key_problems(
    conn: asyncpg.Connection, global_tables: dict[str, str], schema: str = "public"
) -> list[str]:
    """Every break of the key rules in `schema` (tables in `global_tables` are exempt)."""
    problems: list[str] = []
    tables = {r["name"]: r["has_tenant"] for r in await conn.fetch(_ALL_TABLES, schema)}
    for name, has_tenant in tables.items():
        if not has_tenant and name not in global_tables:
            problems.append(f"{name}: no tenant_id and not listed as a global table")
    tenant = {name for name, has_tenant in tables.items() if has_tenant and name not in global_tables}
    for row in await conn.fetch(_UNIQUE_KEYS, schema):
        if row["tbl"] in tenant and row["lead"] != "tenant_id":
            problems.append(
                f"{row['tbl']}: unique key {row['idx']} does not lead with tenant_id ({row['def']})"
            )
    for row in await conn.fetch(_FOREIGN_KEYS, schema):
        if row["tbl"] in tenant and row["ref"] in tenant:
            pairs = set(zip(row["cols"], row["ref_cols"], strict=True))
            if ("tenant_id", "tenant_id") not in pairs:
                problems.append(
                    f"{row['tbl']}: foreign key {row['conname']} to {row['ref']} does not include tenant_id"
                )
    return problems


# -- statements ---------------------------------------------------------------------------------


def _walk(node: Any, *, into_queries: bool = True) -> Iterator[Any]:
    """Every node below `node` (not into nested query blocks when into_queries is false)."""
    if isinstance(node, list | tuple):
        for item in node:
            yield from _walk(item, into_queries=into_queries)
        return
    if not isinstance(node, ast.Node):
        return
    yield node
    for name in node:
        child = getattr(node, name)
        if not into_queries and isinstance(child, ast.SelectStmt | ast.WithClause):
            continue
        if isinstance(child, ast.Node | list | tuple):
            yield from _walk(child, into_queries=into_queries)


def _is_tenant_column(node: Any, tenants: set[str]) -> str | None:
    """'' for an unqualified tenant_id, the qualifier for q.tenant_id (or for t.id where t is the
    tenants table), None otherwise."""
    if isinstance(node, ast.ColumnRef):
        names = [f.sval for f in node.fields if isinstance(f, ast.String)]
        if names and names[-1] == "tenant_id":
            return names[-2] if len(names) > 1 else ""
        if len(names) == 2 and names[0] in tenants and names[1] == "id":
            return names[0]
    if isinstance(node, ast.TypeCast):
        return _is_tenant_column(node.arg, tenants)
    return None


def _has_column(node: Any) -> bool:
    return any(isinstance(n, ast.ColumnRef) for n in _walk(node))


class _Block:
    """One query block (a SELECT, INSERT, UPDATE or DELETE without its nested queries)."""

    def __init__(self) -> None:
        self.relations: list[tuple[str, str]] = []  # (table, name used in the block)
        self.constrained: set[str] = set()  # names whose tenant_id is compared
        self.unqualified = False


def _relations(node: Any, block: _Block, ctes: set[str]) -> None:
    if isinstance(node, ast.RangeVar):
        if node.relname not in ctes or node.schemaname:
            block.relations.append((node.relname, node.alias.aliasname if node.alias else node.relname))
    elif isinstance(node, ast.JoinExpr):
        _relations(node.larg, block, ctes)
        _relations(node.rarg, block, ctes)
        if node.usingClause and any(
            isinstance(s, ast.String) and s.sval == "tenant_id" for s in node.usingClause
        ):
            for side in (node.larg, node.rarg):
                sub = _Block()
                _relations(side, sub, ctes)
                block.constrained.update(name for _, name in sub.relations)
    elif isinstance(node, list | tuple):
        for item in node:
            _relations(item, block, ctes)


def _comparisons(quals: Any, block: _Block, tenants: set[str]) -> tuple[int, int]:
    """Mark the names whose tenant_id the quals compare; (comparisons, anchored ones)."""
    seen = anchored = 0
    for node in _walk(quals, into_queries=False):
        if not isinstance(node, ast.A_Expr) or node.kind not in (
            enums.A_Expr_Kind.AEXPR_OP,
            enums.A_Expr_Kind.AEXPR_OP_ANY,
            enums.A_Expr_Kind.AEXPR_IN,
        ):
            continue
        if not node.name or node.name[-1].sval != "=":
            continue
        sides = [node.lexpr, node.rexpr]
        for this, other in (sides, sides[::-1]):
            qualifier = _is_tenant_column(this, tenants)
            if qualifier is None:
                continue
            seen += 1
            if qualifier:
                block.constrained.add(qualifier)
            else:
                block.unqualified = True
            if not _has_column(other):  # a value, not a join: the statement is held to one tenant
                anchored += 1
    return seen, anchored


def statement_problems(sql: str, tenant: set[str]) -> list[str]:
    """What in one statement touches a tenant table without a tenant filter (empty: none)."""
    problems: list[str] = []
    anchored = 0
    inserts_tenant = False
    touches_tenant = False
    (raw,) = parse_sql(sql)
    ctes = {c.ctename for c in _walk(raw.stmt) if isinstance(c, ast.CommonTableExpr)}
    tenants = {
        r.alias.aliasname if r.alias else r.relname
        for r in _walk(raw.stmt)
        if isinstance(r, ast.RangeVar) and r.relname == "tenants"
    }
    for node in _walk(raw.stmt):
        block = _Block()
        if isinstance(node, ast.SelectStmt) and node.op == enums.SetOperation.SETOP_NONE:
            _relations(node.fromClause, block, ctes)
            _, a = _comparisons([node.whereClause, node.fromClause, node.havingClause], block, tenants)
        elif isinstance(node, ast.UpdateStmt):
            _relations([node.relation, node.fromClause], block, ctes)
            _, a = _comparisons([node.whereClause, node.fromClause], block, tenants)
        elif isinstance(node, ast.DeleteStmt):
            _relations([node.relation, node.usingClause], block, ctes)
            _, a = _comparisons([node.whereClause, node.usingClause], block, tenants)
        elif isinstance(node, ast.InsertStmt):
            table = node.relation.relname
            if table in tenant:
                touches_tenant = True
                columns = {c.name for c in node.cols or ()}
                if "tenant_id" in columns:
                    inserts_tenant = True
                else:
                    problems.append(f"INSERT INTO {table} does not set tenant_id")
            continue
        else:
            continue
        anchored += a
        for table, name in block.relations:
            if table not in tenant:
                continue
            touches_tenant = True
            tenant_names = [n for t, n in block.relations if t in tenant]
            if name in block.constrained or (block.unqualified and len(tenant_names) == 1):
                continue
            problems.append(f"{table} ({name}) is read or changed without a tenant_id filter")
    if touches_tenant and not problems and not anchored and not inserts_tenant:
        problems.append("no tenant_id is compared with a value: the statement spans every tenant")
    return problems
