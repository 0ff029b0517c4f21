"""The project's wrangler config (wrangler.json, wrangler.jsonc or wrangler.toml): find it, read it, list its D1
bindings, and show a d1_databases entry in the file's own syntax."""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d1ops.errors import ConfigError

# wrangler's own order when several exist (it reads the first one it finds).
WRANGLER_CONFIG_NAMES = ("wrangler.json", "wrangler.jsonc", "wrangler.toml")
# database_id values that are clearly not a real database (templates, docs, d1ops's own samples).
PLACEHOLDER_ID = re.compile(r"^(|<.*>|x+|0{8}-0{4}-.*|.*(placeholder|your|replace|todo|example|xxxx).*)$", re.I)


@dataclass(frozen=True)
class Binding:
    """The `[[d1_databases]]` entry an environment resolves to in the wrangler config."""

    binding: str
    database_name: str | None
    database_id: str | None
    migrations_dir: str | None


@dataclass(frozen=True)
class D1Entry:
    """One `d1_databases` entry, where it was found (`wrangler_env` None: the top level)."""

    wrangler_env: str | None
    binding: str
    database_name: str | None
    database_id: str | None
    migrations_dir: str | None

    @property
    def placeholder_id(self) -> bool:
        return self.database_id is None or bool(PLACEHOLDER_ID.match(self.database_id))


def find_wrangler_config(root: Path) -> Path | None:
    """The config wrangler would use in `root`: wrangler.json, then wrangler.jsonc, then wrangler.toml."""
    for name in WRANGLER_CONFIG_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def read_wrangler_config(path: Path) -> dict[str, Any]:
    """Parse wrangler.toml or wrangler.json(c)."""
    if not path.is_file():
        found = find_wrangler_config(path.parent)
        hint = f" {found.name} is there: set 'wrangler_config: {found.name}'." if found else ""
        raise ConfigError(
            f"Wrangler config {path.name} not found in {path.parent}.{hint} "
            "Set 'wrangler_config' in environments.yaml to the file wrangler uses."
        )
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        data = json.loads(strip_json_comments(text))
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path.name}: cannot be parsed ({exc}).") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name}: expected an object at the top level.")
    return data


def strip_json_comments(text: str) -> str:
    """JSONC → JSON: drop // and /* */ comments outside strings, then trailing commas."""
    out, i, in_str = [], 0, False
    while i < len(text):
        ch = text[i]
        if in_str:
            out.append(ch)
            if ch == "\\":
                out.append(text[i + 1 : i + 2])
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
            out.append(ch)
        elif text.startswith("//", i):
            i = text.find("\n", i)
            i = len(text) if i < 0 else i
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = len(text) if end < 0 else end + 2
            continue
        else:
            out.append(ch)
        i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def section_of(wrangler: dict[str, Any], wrangler_env: str | None) -> dict[str, Any] | None:
    if wrangler_env is None:
        return wrangler
    section = (wrangler.get("env") or {}).get(wrangler_env)
    return section if isinstance(section, dict) else None


def d1_entries(wrangler: dict[str, Any]) -> list[D1Entry]:
    """Every d1_databases entry: the top level first, then each [env.X] in file order."""
    entries = []
    for env_name in [None, *list((wrangler.get("env") or {}).keys())]:
        section = section_of(wrangler, env_name) or {}
        for item in section.get("d1_databases") or []:
            if isinstance(item, dict) and item.get("binding"):
                entries.append(
                    D1Entry(
                        wrangler_env=env_name,
                        binding=str(item["binding"]),
                        database_name=item.get("database_name"),
                        database_id=item.get("database_id"),
                        migrations_dir=item.get("migrations_dir"),
                    )
                )
    return entries


def entry_snippet(path: Path, wrangler_env: str | None, binding: str) -> str:
    """The d1_databases entry to add, in the syntax of the project's own wrangler config."""
    if path.suffix == ".toml":
        table = f"env.{wrangler_env}.d1_databases" if wrangler_env else "d1_databases"
        return (
            f'[[{table}]]\nbinding = "{binding}"\ndatabase_name = "<name>"\n'
            'database_id = "<id from `wrangler d1 create <name>`>"'
        )
    entry = f'{{ "binding": "{binding}", "database_name": "<name>", "database_id": "<id>" }}'
    if wrangler_env:
        return f'"env": {{ "{wrangler_env}": {{ "d1_databases": [ {entry} ] }} }}'
    return f'"d1_databases": [ {entry} ]'


def _add_sentence(path: Path, wrangler_env: str | None, binding: str) -> str:
    if path.suffix == ".toml":
        table = f"env.{wrangler_env}.d1_databases" if wrangler_env else "d1_databases"
        return f'Add a [[{table}]] entry with binding = "{binding}".'
    where = f'"env" → "{wrangler_env}" → "d1_databases"' if wrangler_env else '"d1_databases"'
    return f'Add an entry with "binding": "{binding}" to {where}.'


def describe_entries(entries: list[D1Entry]) -> str:
    """ "DB (top level), DB (env.production)" — what the config holds, for error messages."""
    if not entries:
        return "none"
    return ", ".join(f"{e.binding} ({'env.' + e.wrangler_env if e.wrangler_env else 'top level'})" for e in entries)


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """ " (did you mean 'x'?)" for the closest choice, or a unique one that starts with `word` ("prod")."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    if not close and word:
        close = [c for c in choices if c.startswith(word)]
        close = close if len(close) == 1 else []
    return f" (did you mean '{close[0]}'?)" if close else ""


def resolve_binding(
    wrangler: dict[str, Any], wrangler_path: Path, database: str, wrangler_env: str | None, env_name: str
) -> Binding:
    """Find `database` (a binding or database_name) in the right section of the wrangler config.

    `d1_databases` is not inherited into `[env.X]`, and remotely wrangler looks an unknown binding up as a
    database *name*, so an environment whose section lacks it could reach another database: refuse it here.
    """
    section = section_of(wrangler, wrangler_env)
    if section is None:
        known = sorted((wrangler.get("env") or {}).keys())
        raise ConfigError(
            f"environments.yaml: environment '{env_name}': key 'wrangler_env': [env.{wrangler_env}] is not in "
            f"{wrangler_path.name}{suggest(wrangler_env or '', known)}. Add the section or fix the name."
        )
    for entry in section.get("d1_databases") or []:
        if database in (entry.get("binding"), entry.get("database_name")):
            return Binding(
                binding=entry.get("binding", database),
                database_name=entry.get("database_name"),
                database_id=entry.get("database_id"),
                migrations_dir=entry.get("migrations_dir"),
            )
    place = f"[env.{wrangler_env}]" if wrangler_env else "the top level"
    entries = d1_entries(wrangler)
    here = [e.binding for e in entries if e.wrangler_env == wrangler_env]
    raise ConfigError(
        f"environments.yaml: environment '{env_name}': database '{database}' has no d1_databases entry in "
        f"{place} of {wrangler_path.name}{suggest(database, here)}. Bindings found: {describe_entries(entries)}. "
        f"wrangler does not inherit d1_databases into [env.X], and remotely it would look '{database}' up as a "
        f"database name. {_add_sentence(wrangler_path, wrangler_env, database)} (or name the right binding in "
        f"environments.yaml). In {wrangler_path.name}:\n{entry_snippet(wrangler_path, wrangler_env, database)}"
    )
