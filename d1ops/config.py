"""environments.yaml → frozen dataclasses, checked against the wrangler config it points at."""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from d1ops.errors import ConfigError

CONFIG_FILE = "environments.yaml"
CONFIG_ENV_VAR = "D1OPS_CONFIG"

TOP_KEYS = (
    "database",
    "migrations_dir",
    "backups_dir",
    "wrangler_config",
    "default_env",
    "baseline",
    "environments",
)
ENV_KEYS = ("name", "target", "wrangler_env", "protected", "skip", "backup", "verify")
TARGETS = ("local", "remote")
BACKUP_POLICIES = ("required", "optional", "skip")
VERIFY_LEVELS = ("quick", "full")


@dataclass(frozen=True)
class Binding:
    """The `[[d1_databases]]` entry an environment resolves to in the wrangler config."""

    binding: str
    database_name: str | None
    database_id: str | None
    migrations_dir: str | None


@dataclass(frozen=True)
class Environment:
    name: str
    target: str
    wrangler_env: str | None
    protected: bool
    skip: tuple[str, ...]
    backup: str
    verify: str
    binding: Binding

    @property
    def is_remote(self) -> bool:
        return self.target == "remote"


@dataclass(frozen=True)
class Config:
    path: Path
    root: Path
    database: str
    migrations_dir: Path
    backups_dir: Path
    wrangler_config: Path
    default_env: str
    baseline: str | None
    environments: tuple[Environment, ...] = field(default_factory=tuple)

    @property
    def env_names(self) -> list[str]:
        return [e.name for e in self.environments]

    def env(self, name: str | None) -> Environment:
        """The environment called `name` (the default one when None)."""
        wanted = name or self.default_env
        for env in self.environments:
            if env.name == wanted:
                return env
        raise ConfigError(
            f"Unknown environment '{wanted}'{_suggest(wanted, self.env_names)}. "
            f"{self.path.name} defines: {', '.join(self.env_names)}."
        )

    def predecessor(self, env: Environment) -> Environment | None:
        """The environment before `env` in promotion order, or None for the first."""
        index = self.env_names.index(env.name)
        return self.environments[index - 1] if index > 0 else None


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """ " (did you mean 'x'?)" for the closest choice, or a unique one that starts with `word` ("prod")."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    if not close and word:
        close = [c for c in choices if c.startswith(word)]
        close = close if len(close) == 1 else []
    return f" (did you mean '{close[0]}'?)" if close else ""


def find_config_path(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> Path:
    """--config PATH, else $D1OPS_CONFIG, else ./environments.yaml."""
    candidate = explicit or os.environ.get(CONFIG_ENV_VAR)
    if candidate:
        path = Path(candidate)
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist. Check --config / ${CONFIG_ENV_VAR}.")
        return path
    path = (cwd or Path.cwd()) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"No {CONFIG_FILE} in {path.parent}. Run d1ops from the project root, "
            f"or pass --config PATH (or set ${CONFIG_ENV_VAR})."
        )
    return path


def load_config(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> Config:
    """Load and check environments.yaml and the wrangler config it names."""
    path = find_config_path(explicit, cwd).resolve()
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except DuplicateKey as exc:
        raise ConfigError(
            f"{path.name}, line {exc.line}: key '{exc.key}' is given twice{exc.where} (YAML would silently keep the "
            "last one). Keep one and run again."
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML ({exc}). Fix the file and run again.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path.name}: cannot be read ({exc}).") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: expected a mapping of keys ({', '.join(TOP_KEYS)}).")
    return parse_config(raw, path)


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, line: int, first: int) -> None:
        super().__init__(key)
        self.key, self.line = key, line
        self.where = f" (first on line {first})"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with the same key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in seen:
                raise DuplicateKey(str(key), line, seen[key])
            if isinstance(key, str | int | float | bool):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_config(raw: dict[str, Any], path: Path) -> Config:
    where = path.name
    _reject_unknown(raw, TOP_KEYS, where)
    root = path.parent

    database = _str(raw, "database", where, required=True)
    wrangler_config = root / _str(raw, "wrangler_config", where, default="wrangler.toml")
    wrangler = read_wrangler_config(wrangler_config)

    envs_raw = raw.get("environments")
    if not isinstance(envs_raw, list) or not envs_raw:
        raise ConfigError(f"{where}: key 'environments' must be a non-empty list of environments.")
    environments: list[Environment] = []
    for index, item in enumerate(envs_raw):
        environments.append(_parse_env(item, index, database, wrangler, wrangler_config, where))
    names = [e.name for e in environments]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: environment names must be unique; repeated: {', '.join(dupes)}.")

    default_env = _str(raw, "default_env", where, default=names[0])
    if default_env not in names:
        raise ConfigError(
            f"{where}: key 'default_env': '{default_env}' is not an environment"
            f"{_suggest(default_env, names)}. Defined: {', '.join(names)}."
        )

    migrations_dir = raw.get("migrations_dir")
    if migrations_dir is None:
        migrations_dir = environments[0].binding.migrations_dir or "migrations"
    elif not isinstance(migrations_dir, str):
        raise ConfigError(f"{where}: key 'migrations_dir' must be a path string.")
    if (root / migrations_dir).is_file():
        raise ConfigError(
            f"{where}: key 'migrations_dir': {root / migrations_dir} is a file, not a folder. Point it at the folder "
            "that holds the migration files (wrangler's default: migrations)."
        )
    baseline = raw.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise ConfigError(f"{where}: key 'baseline' must be a migration file name or null.")

    return Config(
        path=path,
        root=root,
        database=database,
        migrations_dir=root / migrations_dir,
        backups_dir=root / _str(raw, "backups_dir", where, default="backups"),
        wrangler_config=wrangler_config,
        default_env=default_env,
        baseline=baseline,
        environments=tuple(environments),
    )


def _parse_env(
    item: Any, index: int, database: str, wrangler: dict[str, Any], wrangler_path: Path, where: str
) -> Environment:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: environments[{index}] must be a mapping with at least 'name' and 'target'.")
    here = f"{where}: environments[{index}]"
    _reject_unknown(item, ENV_KEYS, here)
    name = _str(item, "name", here, required=True)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise ConfigError(f"{here}: key 'name': '{name}' must be letters, digits, '-' or '_'.")
    here = f"{where}: environment '{name}'"
    target = _str(item, "target", here, required=True)
    if target not in TARGETS:
        raise ConfigError(f"{here}: key 'target' must be one of {', '.join(TARGETS)}{_suggest(target, TARGETS)}.")
    wrangler_env = item.get("wrangler_env")
    if wrangler_env is not None and not isinstance(wrangler_env, str):
        raise ConfigError(f"{here}: key 'wrangler_env' must be a string (an [env.X] name in the wrangler config).")
    protected = item.get("protected", False)
    if not isinstance(protected, bool):
        raise ConfigError(f"{here}: key 'protected' must be true or false.")
    skip = item.get("skip", [])
    if not isinstance(skip, list) or not all(isinstance(s, str) for s in skip):
        raise ConfigError(f"{here}: key 'skip' must be a list of migration file names.")
    default_backup = "required" if (protected or target == "remote") else "optional"
    backup = _str(item, "backup", here, default=default_backup)
    if backup not in BACKUP_POLICIES:
        raise ConfigError(
            f"{here}: key 'backup' must be one of {', '.join(BACKUP_POLICIES)}{_suggest(backup, BACKUP_POLICIES)}."
        )
    verify = _str(item, "verify", here, default="full" if protected else "quick")
    if verify not in VERIFY_LEVELS:
        raise ConfigError(
            f"{here}: key 'verify' must be one of {', '.join(VERIFY_LEVELS)}{_suggest(verify, VERIFY_LEVELS)}."
        )
    binding = resolve_binding(wrangler, wrangler_path, database, wrangler_env, name)
    return Environment(
        name=name,
        target=target,
        wrangler_env=wrangler_env,
        protected=protected,
        skip=tuple(skip),
        backup=backup,
        verify=verify,
        binding=binding,
    )


def read_wrangler_config(path: Path) -> dict[str, Any]:
    """Parse wrangler.toml or wrangler.json(c)."""
    if not path.is_file():
        raise ConfigError(
            f"Wrangler config {path.name} not found in {path.parent}. "
            "Set 'wrangler_config' in environments.yaml to the file wrangler uses."
        )
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        return json.loads(_strip_json_comments(text))
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path.name}: cannot be parsed ({exc}).") from exc


def _strip_json_comments(text: str) -> str:
    # JSONC: drop // and /* */ comments outside strings, then trailing commas.
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


def resolve_binding(
    wrangler: dict[str, Any], wrangler_path: Path, database: str, wrangler_env: str | None, env_name: str
) -> Binding:
    """Find `database` (a binding or database_name) in the right section of the wrangler config.

    `d1_databases` is not inherited into `[env.X]`, and remotely wrangler looks an unknown binding up as a
    database *name*, so an environment whose section lacks it could reach another database: refuse it here.
    """
    if wrangler_env:
        section = (wrangler.get("env") or {}).get(wrangler_env)
        if section is None:
            known = sorted((wrangler.get("env") or {}).keys())
            raise ConfigError(
                f"environments.yaml: environment '{env_name}': key 'wrangler_env': [env.{wrangler_env}] is not in "
                f"{wrangler_path.name}{_suggest(wrangler_env, known)}. Add the section or fix the name."
            )
        place = f"[env.{wrangler_env}]"
    else:
        section = wrangler
        place = "the top level"
    for entry in section.get("d1_databases") or []:
        if database in (entry.get("binding"), entry.get("database_name")):
            return Binding(
                binding=entry.get("binding", database),
                database_name=entry.get("database_name"),
                database_id=entry.get("database_id"),
                migrations_dir=entry.get("migrations_dir"),
            )
    raise ConfigError(
        f"environments.yaml: environment '{env_name}': database '{database}' has no d1_databases entry in "
        f"{place} of {wrangler_path.name}. wrangler does not inherit d1_databases into [env.X], and remotely it "
        f"would look '{database}' up as a database name. Add a [[{'env.' + wrangler_env + '.' if wrangler_env else ''}"
        f'd1_databases]] entry with binding = "{database}".'
    )


def _reject_unknown(raw: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{key}'{_suggest(str(key), allowed)}. Valid keys: {', '.join(allowed)}."
            )


def _str(raw: dict[str, Any], key: str, where: str, *, required: bool = False, default: str = "") -> str:
    value = raw.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}: key '{key}' is required.")
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{where}: key '{key}' must be a string, not {type(value).__name__}.")
    return value
