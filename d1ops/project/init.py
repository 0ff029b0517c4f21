"""`d1ops init`: write environments.yaml for an existing Workers project from its wrangler config.

The top level's D1 databases become `dev` (target local: a local copy, harmless whatever the top level points
at); every `[env.X]` section becomes a remote environment, ordered dev → staging → production where those names
exist; production is protected and skips sample/seed files; `baseline` is the newest migration already on disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from d1ops.errors import ConfigError, UsageError
from d1ops.project.config import CONFIG_FILE, DEFAULT_BACKUPS_DIR, NAME_PATTERN, parse_configs
from d1ops.project.migrations import DOWN_SUFFIX, wrangler_order
from d1ops.wrangler.config import D1Entry, d1_entries, entry_snippet, find_wrangler_config, read_wrangler_config

DEV_NAMES = ("dev", "development", "local")
STAGING_NAMES = ("staging", "stage", "preview", "test", "qa")
PRODUCTION_NAMES = ("production", "prod", "live")
SAMPLE_FILE = re.compile(r"sample|seed|fixture|demo|example", re.IGNORECASE)
GITIGNORE_LINE = f"{DEFAULT_BACKUPS_DIR}/"


@dataclass
class InitResult:
    path: Path
    wrangler_config: Path
    text: str
    databases: list[str]
    environments: list[str]
    notes: list[str] = field(default_factory=list)  # what to check by hand
    gitignore: str | None = None  # what was done to .gitignore


def init_project(root: Path, *, force: bool = False, top_level: str | None = None) -> InitResult:
    """Write `root/environments.yaml` from the wrangler config in `root`.

    `top_level`: "dev" (default) or "production" when the top-level database is the production one; init notes
    when it looks like production and `top_level` was not given."""
    target = root / CONFIG_FILE
    if target.exists() and not force:
        raise UsageError(f"{target} already exists; nothing was written. Edit it, or run `d1ops init --force`.")
    wrangler_path = find_wrangler_config(root)
    if wrangler_path is None:
        raise ConfigError(
            f"No wrangler.json, wrangler.jsonc or wrangler.toml in {root}. Run `d1ops init` in your Worker's "
            "folder (where `wrangler deploy` runs)."
        )
    wrangler = read_wrangler_config(wrangler_path)
    entries = d1_entries(wrangler)
    top = [e for e in entries if e.wrangler_env is None]
    sections = [str(name) for name in (wrangler.get("env") or {})]
    if not entries:
        raise ConfigError(
            f"{wrangler_path.name} has no d1_databases entry: add your D1 database there first "
            "(`wrangler d1 create <name>` prints the entry), then run `d1ops init` again."
        )
    notes: list[str] = []
    base = top or [e for e in entries if e.wrangler_env == _order(sections)[0]]
    if not top:
        notes.append(
            f"the top level of {wrangler_path.name} has no D1 database: dev uses [env.{base[0].wrangler_env}]."
        )
    looks_prod = _production_sign(wrangler, top) if top else None
    if top_level is None and looks_prod:
        top_level = "dev"
        notes.append(
            f"the top level of {wrangler_path.name} looks like production ({looks_prod}). Its database "
            f"({', '.join(str(e.database_name) for e in top)}) is dev here with target: local (a local copy, "
            "harmless). If production deploys from the top level, run `d1ops init --force --top-level production` "
            "so it is a protected remote environment too."
        )
    environments = _environments(root, wrangler_path, base, sections, top_level or "dev", notes)
    databases = _databases(root, base, entries, environments, notes)
    _refuse_missing_bindings(wrangler_path, entries, databases, environments)
    for e in entries:
        if e.placeholder_id:
            where = f"[env.{e.wrangler_env}]" if e.wrangler_env else "the top level"
            notes.append(
                f"{e.binding} in {where} has a placeholder database_id ({e.database_id or 'none'}): local runs work, "
                "remote ones need the real id (`d1ops create ENV --write-config` or `wrangler d1 list`)."
            )
    raw: dict[str, Any] = {}
    if len(databases) == 1:
        only = databases[0]
        raw["database"] = only["binding"]
        raw["migrations_dir"] = only["migrations_dir"]
        raw["baseline"] = only["baseline"]
    else:
        raw["databases"] = databases
    raw.update(
        backups_dir=DEFAULT_BACKUPS_DIR,
        wrangler_config=wrangler_path.name,
        default_env=environments[0]["name"],
        environments=environments,
    )
    try:
        parse_configs(raw, target)  # what every command will load: never write a config they refuse
    except ConfigError as exc:
        message = f"d1ops init could not write a config that loads, so nothing was written:\n{exc.message}"
        raise ConfigError(message) from None
    text = _header(wrangler_path) + yaml.safe_dump(raw, sort_keys=False, width=110)
    target.write_text(text, encoding="utf-8")
    return InitResult(
        path=target,
        wrangler_config=wrangler_path,
        text=text,
        databases=[d["name"] for d in databases],
        environments=[e["name"] for e in environments],
        notes=notes,
        gitignore=ignore_backups(root),
    )


def top_level_looks_like_production(root: Path) -> str | None:
    """Why the top level looks like production (init then asks), else None."""
    path = find_wrangler_config(root)
    if path is None:
        return None
    wrangler = read_wrangler_config(path)
    top = [e for e in d1_entries(wrangler) if e.wrangler_env is None]
    return _production_sign(wrangler, top) if top else None


ENV_VARS = ("ENVIRONMENT", "ENV", "APP_ENV", "NODE_ENV", "STAGE", "DEPLOY_ENV")


def _production_sign(wrangler: dict[str, Any], top: list[D1Entry]) -> str | None:
    """What makes the top level look like production: its database's name, a var such as ENVIRONMENT =
    "production", or a worker named …-production. None when nothing does."""
    for entry in top:
        if _is_production(entry.database_name or ""):
            return f"database_name {entry.database_name}"
    variables = wrangler.get("vars")
    variables = variables if isinstance(variables, dict) else {}
    for key in ENV_VARS:
        value = variables.get(key)
        if isinstance(value, str) and value.lower() in PRODUCTION_NAMES:
            return f'vars {key} = "{value}"'
    name = wrangler.get("name")
    if isinstance(name, str) and re.search(r"(^|[-_.])(production|prod|live)$", name, re.IGNORECASE):
        return f'worker name "{name}"'
    return None


def _refuse_missing_bindings(
    wrangler_path: Path, entries: list[D1Entry], databases: list[dict[str, Any]], envs: list[dict[str, Any]]
) -> None:
    """Every environment's section must hold every database's binding (wrangler does not inherit d1_databases
    into [env.X]): else refuse, with the entries to add to the wrangler config."""
    missing: list[tuple[str, str]] = []
    for item in databases:
        for env in envs:
            section = env.get("wrangler_env")
            if section is None:
                continue
            binding = (item.get("environments") or {}).get(env["name"], {}).get("binding") or env.get("database")
            binding = binding or item["binding"]
            here = [e for e in entries if e.wrangler_env == section]
            if not any(binding in (e.binding, e.database_name) for e in here):
                missing.append((section, binding))
    if not missing:
        return
    named = "; ".join(f"{binding} in [env.{section}]" for section, binding in missing)
    snippets = "\n".join(entry_snippet(wrangler_path, section, binding) for section, binding in missing)
    raise ConfigError(
        f"{wrangler_path.name} lacks a d1_databases entry d1ops needs: {named}. wrangler does not inherit "
        f"d1_databases into [env.X] (remotely it would look the binding up as a database name), so no config "
        f"written from it would load; nothing was written. Add to {wrangler_path.name} (the database that "
        f"environment uses; `wrangler d1 create <name>` prints its id):\n{snippets}\nthen run `d1ops init` again."
    )


def _header(wrangler_path: Path) -> str:
    return (
        f"# Written by `d1ops init` from {wrangler_path.name}. The order of `environments` is the promotion order.\n"
        "# baseline: the newest migration of the history adopted as it is (`d1ops adopt ENV --through NAME`\n"
        "# records it as applied); lint judges only what follows it.\n"
    )


def _is_production(name: str) -> bool:
    return any(p in name.lower() for p in PRODUCTION_NAMES)


def _order(sections: list[str]) -> list[str]:
    """dev-like first, then others in file order, then staging-like, then production-like."""

    def rank(name: str) -> int:
        low = name.lower()
        if low in DEV_NAMES:
            return 0
        if low in STAGING_NAMES:
            return 2
        if low in PRODUCTION_NAMES:
            return 3
        return 1

    return sorted(sections, key=rank)


def _environments(
    root: Path, wrangler_path: Path, base: list[D1Entry], sections: list[str], top_level: str, notes: list[str]
) -> list[dict[str, Any]]:
    envs: list[dict[str, Any]] = []
    names = {s.lower() for s in sections}
    dev_name = "dev" if "dev" not in names else "local"
    dev: dict[str, Any] = {"name": dev_name, "target": "local"}
    if base[0].wrangler_env:
        dev["wrangler_env"] = base[0].wrangler_env
    envs.append(dev)
    with_d1 = [s for s in _order(sections) if s != base[0].wrangler_env]
    for section in with_d1:
        if not NAME_PATTERN.fullmatch(section):
            notes.append(f"[env.{section}] was left out: its name is not a valid d1ops environment name.")
            continue
        env: dict[str, Any] = {"name": section, "target": "remote", "wrangler_env": section}
        envs.append(env)
    if top_level == "production" and not base[0].wrangler_env:
        envs.append({"name": "production" if "production" not in names else "top-level", "target": "remote"})
    prod = [e for e in envs if e["target"] == "remote" and e["name"].lower() in (*PRODUCTION_NAMES, "top-level")]
    if not prod and len(envs) > 1:
        notes.append(
            "no environment is named production: add `protected: true` to the one that serves users, so every "
            "change to it asks for confirmation."
        )
    for env in prod:
        env["protected"] = True
        samples = _sample_files(root, base)
        if samples:
            env["skip"] = samples
            notes.append(f"{env['name']} skips {', '.join(samples)} (sample or seed data): check that list.")
    if len(envs) == 1:
        notes.append(f"{wrangler_path.name} has no [env.X] section: only dev (local) was written.")
    return envs


def _sample_files(root: Path, base: list[D1Entry]) -> list[str]:
    found: list[str] = []
    for entry in base:
        folder = root / (entry.migrations_dir or "migrations")
        found += [n for n in _migration_names(folder) if SAMPLE_FILE.search(n) and n not in found]
    return found


def _migration_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return wrangler_order([p.name for p in folder.glob("*.sql") if not p.name.endswith(DOWN_SUFFIX)])


def _databases(
    root: Path, base: list[D1Entry], entries: list[D1Entry], envs: list[dict[str, Any]], notes: list[str]
) -> list[dict[str, Any]]:
    """One entry per database of the dev section; where another section names it differently (DB_DEV/DB_PROD),
    pair by position and record the binding per environment."""
    databases = []
    for index, entry in enumerate(base):
        folder = entry.migrations_dir or "migrations"
        names = _migration_names(root / folder)
        item: dict[str, Any] = {
            "name": entry.binding,
            "binding": entry.binding,
            "migrations_dir": folder,
            "baseline": names[-1] if names else None,
        }
        if not (root / folder).is_dir():
            notes.append(f"{entry.binding}: migrations folder {folder}/ does not exist yet (`d1ops new NAME`).")
        overrides = {}
        for env in envs:
            section = env.get("wrangler_env")
            here = [e for e in entries if e.wrangler_env == section]
            if section is None or section == entry.wrangler_env or any(e.binding == entry.binding for e in here):
                continue
            if len(here) == len(base):
                overrides[env["name"]] = {"binding": here[index].binding}
                notes.append(
                    f"{entry.binding} is {here[index].binding} in [env.{section}] (paired by position): check it."
                )
        if overrides:
            item["environments"] = overrides
        databases.append(item)
    if len(databases) == 1 and databases[0].get("environments"):
        for env in envs:  # one database: its per-environment binding goes on the environment itself
            override = databases[0]["environments"].get(env["name"])
            if override:
                env["database"] = override["binding"]
    return databases


def git_ignores(root: Path, folder: str) -> bool:
    """The project's .gitignore names `folder` (relative to the root; `backups`, `backups/`, `/backups/` alike):
    the one check `init` and `doctor` make."""
    path = root / ".gitignore"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return folder.strip("/") in {line.strip().strip("/") for line in lines}


def ignore_backups(root: Path) -> str | None:
    """Add backups/ (dumps of real rows: emails, tokens) to the project's .gitignore; say what was done."""
    path = root / ".gitignore"
    if git_ignores(root, GITIGNORE_LINE):
        return None
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    path.write_text(text + "# d1ops backups hold real rows: never commit them\n" + GITIGNORE_LINE + "\n")
    return f"added {GITIGNORE_LINE} to .gitignore"
