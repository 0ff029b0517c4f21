"""environments.yaml → frozen dataclasses, checked against the wrangler config it points at.

A project has one database (`database: DB`, today's file) or several (`databases:`, a list of entries, each with
its binding, migrations folder, baseline and per-environment overrides). Every command works on one database at
a time: `load_config(..., database=NAME)` returns the `Config` of that database, whose environments are resolved
for it (an `Environment` is one environment × one database). Backups and reports of a project with one
`database:` live in `backups/<env>/`; with `databases:` in `backups/<env>/<database>/`, so adding a database
later moves nothing. A fleet (`fleet: GLOB` or `fleet_file:` on an environment) is found at run time (run/fleet.py).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from d1ops.backups.layout import VERIFY_LEVELS
from d1ops.errors import ConfigError
from d1ops.wrangler.config import Binding, find_wrangler_config, read_wrangler_config, resolve_binding
from d1ops.wrangler.config import suggest as _suggest

__all__ = [
    "Binding",
    "Config",
    "Environment",
    "load_config",
    "load_configs",
    "read_wrangler_config",
    "resolve_binding",
]

CONFIG_FILE = "environments.yaml"
CONFIG_ENV_VAR = "D1OPS_CONFIG"

TOP_KEYS = (
    "database",
    "databases",
    "migrations_dir",
    "backups_dir",
    "wrangler_config",
    "default_env",
    "baseline",
    "environments",
)
ENV_KEYS: tuple[str, ...] = ("name", "target", "wrangler_env", "protected", "skip", "backup", "verify", "database")
ENV_KEYS += ("row_guard", "fleet", "fleet_file")  # fleet: many databases of the account (Environment.is_fleet)
DATABASE_KEYS = ("name", "binding", "migrations_dir", "baseline", "environments")
DATABASE_ENV_KEYS = ("binding",)
TARGETS = ("local", "remote")
BACKUP_POLICIES = ("required", "optional", "skip")
DEFAULT_BACKUPS_DIR = "backups"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # an environment's or a database's name


@dataclass(frozen=True)
class Environment:
    """One environment of one database."""

    name: str
    target: str
    wrangler_env: str | None
    protected: bool
    skip: tuple[str, ...]
    backup: str
    verify: str
    binding: Binding
    database: str = ""  # the database's name in environments.yaml (its binding for a one-database file)
    fleet: str | None = None  # a glob over the account's database names ("tenant-*"); or fleet_file: a file of
    fleet_file: str | None = None  # database names or ids, one a line (relative to the project)
    row_guard: bool = True  # the row guard in every batch that changes this environment (sql/rowguard.py)

    @property
    def is_remote(self) -> bool:
        return self.target == "remote"

    is_fleet = property(lambda self: bool(self.fleet or self.fleet_file))  # many databases, reached via the API


@dataclass(frozen=True)
class DatabaseSpec:
    """One entry of `databases:` (or the single `database:`), before it is resolved per environment."""

    name: str
    binding: str
    migrations_dir: str | None
    baseline: str | None
    env_bindings: dict[str, str]
    folder: str | None  # its folder under backups/<env>/ (None: one-database layout, backups/<env>/ itself)


@dataclass(frozen=True)
class Config:
    """The config of one database of the project (every command works on one at a time)."""

    path: Path
    root: Path
    database: str
    migrations_dir: Path
    backups_dir: Path
    wrangler_config: Path
    default_env: str
    baseline: str | None
    environments: tuple[Environment, ...] = field(default_factory=tuple)
    databases: tuple[str, ...] = ()  # every database of the project, in file order
    folder: str | None = None

    @property
    def env_names(self) -> list[str]:
        return [e.name for e in self.environments]

    @property
    def several(self) -> bool:
        return len(self.databases) > 1

    @property
    def schema_cache(self) -> Path:
        """Where replays of the migrations (drift's expected schemas) are cached."""
        return self.backups_dir / ".schema-cache"

    def env_dir(self, env_name: str) -> Path:
        """Where this database's backups and reports of `env_name` live."""
        base = self.backups_dir / env_name
        return base / self.folder if self.folder else base

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


def load_config(
    explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None, *, database: str | None = None
) -> Config:
    """Load and check environments.yaml and the wrangler config it names: the config of `database` (default:
    the only one, or the first of several)."""
    configs = load_configs(explicit, cwd)
    return pick_database(configs, database)


def load_configs(explicit: str | os.PathLike[str] | None = None, cwd: Path | None = None) -> list[Config]:
    """The config of every database of the project, in file order."""
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
    return parse_configs(raw, path)


def pick_database(configs: list[Config], database: str | None) -> Config:
    if database is None:
        return configs[0]
    for config in configs:
        if config.database == database:
            return config
    names = [c.database for c in configs]
    raise ConfigError(
        f"Unknown database '{database}'{_suggest(database, names)}. {configs[0].path.name} defines: {', '.join(names)}."
    )


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


def parse_configs(raw: dict[str, Any], path: Path) -> list[Config]:
    where = path.name
    _reject_unknown(raw, TOP_KEYS, where)
    root = path.parent
    wrangler_config = root / _str(raw, "wrangler_config", where, default=_default_wrangler_config(root))
    wrangler = read_wrangler_config(wrangler_config)
    specs = _parse_databases(raw, where)

    envs_raw = raw.get("environments")
    if not isinstance(envs_raw, list) or not envs_raw:
        raise ConfigError(f"{where}: key 'environments' must be a non-empty list of environments.")
    names = [item.get("name") if isinstance(item, dict) else None for item in envs_raw]
    dupes = sorted({str(n) for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: environment names must be unique; repeated: {', '.join(dupes)}.")
    configs = []
    for spec in specs:
        for env_name in spec.env_bindings:
            if env_name not in names:
                raise ConfigError(
                    f"{where}: database '{spec.name}': key 'environments': '{env_name}' is not an environment"
                    f"{_suggest(env_name, [str(n) for n in names])}."
                )
        environments = [
            _parse_env(item, index, spec, wrangler, wrangler_config, where) for index, item in enumerate(envs_raw)
        ]
        configs.append(_database_config(raw, path, spec, environments, wrangler_config, specs))
    return configs


def _default_wrangler_config(root: Path) -> str:
    found = find_wrangler_config(root)
    return found.name if found else "wrangler.toml"


def _parse_databases(raw: dict[str, Any], where: str) -> list[DatabaseSpec]:
    if "database" in raw and "databases" in raw:
        raise ConfigError(f"{where}: give 'database' (one database) or 'databases' (a list), not both.")
    if "databases" not in raw:
        database = _str(raw, "database", where, required=True)
        migrations_dir = raw.get("migrations_dir")
        if migrations_dir is not None and not isinstance(migrations_dir, str):
            raise ConfigError(f"{where}: key 'migrations_dir' must be a path string.")
        return [DatabaseSpec(database, database, migrations_dir, _baseline(raw, where), {}, None)]
    for key in ("migrations_dir", "baseline"):
        if key in raw:
            raise ConfigError(
                f"{where}: key '{key}' belongs in each entry of 'databases' when there are several databases."
            )
    items = raw["databases"]
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: key 'databases' must be a non-empty list of databases (name, binding, ...).")
    specs = []
    for index, item in enumerate(items):
        here = f"{where}: databases[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{here} must be a mapping with at least 'name' (and 'binding' if it differs).")
        _reject_unknown(item, DATABASE_KEYS, here)
        name = _str(item, "name", here, required=True)
        if not NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"{here}: key 'name': '{name}' must be letters, digits, '-' or '_'.")
        here = f"{where}: database '{name}'"
        per_env = item.get("environments") or {}
        if not isinstance(per_env, dict):
            raise ConfigError(f"{here}: key 'environments' must map environment names to {{binding: NAME}}.")
        env_bindings = {}
        for env_name, override in per_env.items():
            if not isinstance(override, dict):
                raise ConfigError(f"{here}: environments.{env_name} must be a mapping like {{binding: DB_PROD}}.")
            _reject_unknown(override, DATABASE_ENV_KEYS, f"{here}: environments.{env_name}")
            env_bindings[str(env_name)] = _str(override, "binding", f"{here}: environments.{env_name}", required=True)
        migrations_dir = item.get("migrations_dir")
        if migrations_dir is not None and not isinstance(migrations_dir, str):
            raise ConfigError(f"{here}: key 'migrations_dir' must be a path string.")
        binding = _str(item, "binding", here, default=name)
        specs.append(DatabaseSpec(name, binding, migrations_dir, _baseline(item, here), env_bindings, name))
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{where}: database names must be unique; repeated: {', '.join(dupes)}.")
    return specs


def _baseline(raw: dict[str, Any], where: str) -> str | None:
    baseline = raw.get("baseline")
    if baseline is not None and not isinstance(baseline, str):
        raise ConfigError(f"{where}: key 'baseline' must be a migration file name or null.")
    return baseline


def _database_config(
    raw: dict[str, Any],
    path: Path,
    spec: DatabaseSpec,
    environments: list[Environment],
    wrangler_config: Path,
    specs: list[DatabaseSpec],
) -> Config:
    where = path.name
    names = [e.name for e in environments]
    default_env = _str(raw, "default_env", where, default=names[0])
    if default_env not in names:
        raise ConfigError(
            f"{where}: key 'default_env': '{default_env}' is not an environment"
            f"{_suggest(default_env, names)}. Defined: {', '.join(names)}."
        )
    migrations_dir = spec.migrations_dir or environments[0].binding.migrations_dir or "migrations"
    root = path.parent
    if (root / migrations_dir).is_file():
        raise ConfigError(
            f"{where}: key 'migrations_dir': {root / migrations_dir} is a file, not a folder. Point it at the folder "
            "that holds the migration files (wrangler's default: migrations)."
        )
    return Config(
        path=path,
        root=root,
        database=spec.name,
        migrations_dir=root / migrations_dir,
        backups_dir=root / _str(raw, "backups_dir", where, default=DEFAULT_BACKUPS_DIR),
        wrangler_config=wrangler_config,
        default_env=default_env,
        baseline=spec.baseline,
        environments=tuple(environments),
        databases=tuple(s.name for s in specs),
        folder=spec.folder,
    )


def _parse_env(
    item: Any, index: int, spec: DatabaseSpec, wrangler: dict[str, Any], wrangler_path: Path, where: str
) -> Environment:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: environments[{index}] must be a mapping with at least 'name' and 'target'.")
    here = f"{where}: environments[{index}]"
    _reject_unknown(item, ENV_KEYS, here)
    name = _str(item, "name", here, required=True)
    if not NAME_PATTERN.fullmatch(name):
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
    if "database" in item and spec.folder is not None:
        raise ConfigError(
            f"{here}: key 'database' is for one-database files; with 'databases', set "
            f"databases[].environments.{name}.binding instead."
        )
    row_guard = item.get("row_guard", True)
    if not isinstance(row_guard, bool):
        raise ConfigError(f"{here}: key 'row_guard' must be true or false (default true).")
    fleet, fleet_file = _str(item, "fleet", here) or None, _str(item, "fleet_file", here) or None
    if (fleet and fleet_file) or ((fleet or fleet_file) and target != "remote"):
        raise ConfigError(f"{here}: a fleet takes 'fleet' (a name pattern) or 'fleet_file' (a list), not both, "
                          "and lives in a Cloudflare account ('target: remote').")  # fmt: skip
    if fleet or fleet_file:
        binding = Binding(binding=name, database_name=None, database_id=None, migrations_dir=None)
    else:
        database = spec.env_bindings.get(name) or _str(item, "database", here, default=spec.binding)
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
        database=spec.name,
        fleet=fleet,
        fleet_file=fleet_file,
        row_guard=row_guard,
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
