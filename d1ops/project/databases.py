"""Remote-only D1 operations: create, info, list (wrangler talks to Cloudflare's REST API for these)."""

from __future__ import annotations

import re
from typing import Any

from d1ops.errors import ConfigError, UsageError, WranglerError
from d1ops.project.config import Environment, read_wrangler_config, resolve_binding
from d1ops.project.project import Project

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# wrangler prints the config snippet to paste: `database_id = "…"` (toml) or `"database_id": "…"` (json)
_SNIPPET_ID = re.compile(rf"database_id\W+({_UUID.pattern})")


def _require_remote(env: Environment, what: str) -> None:
    if not env.is_remote:
        raise UsageError(
            f"{what} is remote-only, and {env.name} is target: local (a local D1 is created on first use)."
        )


def create_database(project: Project, env: Environment, *, write_config: bool = False) -> dict[str, Any]:
    """`wrangler d1 create <database_name>`; tells (or writes) the database_id for the wrangler config."""
    _require_remote(env, "create")
    name = env.binding.database_name
    if not name:
        raise ConfigError(
            f"{env.name}'s d1_databases entry in {project.config.wrangler_config.name} has no database_name: "
            "add one (the name the database gets)."
        )
    out = project.wrangler.create(name)
    match = _SNIPPET_ID.search(out) or _UUID.search(out)
    if not match:
        raise WranglerError(["wrangler", "d1", "create", name], 0, f"no database id in wrangler's output: {out[-300:]}")
    uuid = match.group(match.lastindex or 0)
    section = f"[[env.{env.wrangler_env}.d1_databases]]" if env.wrangler_env else "[[d1_databases]]"
    snippet = f'{section} binding = "{env.binding.binding}", database_name = "{name}", database_id = "{uuid}"'
    if write_config:
        write_database_id(project, env, uuid)
    return {"name": name, "uuid": uuid, "env": env.name, "config_written": write_config, "snippet": snippet}


def write_database_id(project: Project, env: Environment, uuid: str) -> None:
    """Set database_id of `env`'s binding in wrangler.toml, editing only that line (comments survive)."""
    path = project.config.wrangler_config
    if path.suffix != ".toml":
        raise UsageError(f'--write-config edits wrangler.toml only; put database_id = "{uuid}" in {path.name}.')
    original = path.read_text(encoding="utf-8")
    lines = original.splitlines(keepends=True)
    header = f"[[env.{env.wrangler_env}.d1_databases]]" if env.wrangler_env else "[[d1_databases]]"
    starts = [i for i, line in enumerate(lines) if _TABLE_HEADER.match(line)] + [len(lines)]
    block = next(
        (
            (start, end)
            for start, end in zip(starts, starts[1:], strict=False)
            if _normal_header(lines[start]) == header and _block_matches(lines[start:end], env)
        ),
        None,
    )
    if block is None:
        raise ConfigError(
            f'Found no {header} block with binding "{env.binding.binding}" in {path.name}; '
            f'add database_id = "{uuid}" to it by hand.'
        )
    start, end = block
    for j in range(start + 1, end):
        if re.match(r"\s*database_id\s*=", lines[j]):
            indent = lines[j][: len(lines[j]) - len(lines[j].lstrip())]
            lines[j] = f'{indent}database_id = "{uuid}"\n'
            break
    else:
        while end > start + 1 and not lines[end - 1].strip():  # after the block's last key, not its blank lines
            end -= 1
        if not lines[end - 1].endswith("\n"):
            lines[end - 1] += "\n"
        lines.insert(end, f'database_id = "{uuid}"\n')
    path.write_text("".join(lines), encoding="utf-8")
    # re-read to prove the file still parses and the binding resolves to the new id; else put the file back
    try:
        config = read_wrangler_config(path)
        written = resolve_binding(config, path, env.binding.binding, env.wrangler_env, env.name).database_id
    except ConfigError:
        written = None
    if written != uuid:
        path.write_text(original, encoding="utf-8")
        raise ConfigError(f'Writing database_id into {path.name} did not take; set it by hand to "{uuid}".')


_TABLE_HEADER = re.compile(r"\s*\[")


def _normal_header(line: str) -> str:
    """`[[ env.staging.d1_databases ]]  # comment` → `[[env.staging.d1_databases]]`."""
    return re.sub(r"\s+", "", line.split("#", 1)[0])


def _block_matches(block: list[str], env: Environment) -> bool:
    text = "".join(block)
    value = re.escape(env.binding.binding)
    return bool(re.search(rf"""^\s*binding\s*=\s*(["']){value}\1""", text, re.MULTILINE))


def database_info(project: Project, env: Environment) -> dict[str, Any]:
    _require_remote(env, "info")
    return project.wrangler.info(env)


def list_databases(project: Project) -> list[dict[str, Any]]:
    """Every database of the account, each with `used_by`: the environments of this project that use it.

    An environment uses the database whose id is its database_id (remotely wrangler addresses it by id): a
    database that merely has an environment's database_name (created, but its id not yet in the config) is not.
    """
    rows = project.wrangler.list_databases()
    for row in rows:
        row["used_by"] = [
            e.name for e in project.config.environments if e.is_remote and row.get("uuid") == e.binding.database_id
        ]
    return rows
