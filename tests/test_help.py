"""Every command's --help (text, -q/-v, an example), errors as JSON for every command that has --json, shell
completion, and what --help/--version/completion import (no wrangler process in this file)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.shell_completion import ShellComplete
from click.testing import CliRunner

from d1ops.cli import cli
from d1ops.cli.completion import COMPLETE_VAR, complete_database
from tests.conftest import REPO, WRANGLER_VERSION, Proj, make_project


def commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from commands(command, (*prefix, name))


ALL = list(commands())
LEAVES = [(path, c) for path, c in ALL if not isinstance(c, click.Group)]


def test_every_command_is_walked() -> None:
    names = {" ".join(path) for path, _ in ALL}
    assert {"migrate", "promote", "status", "backup", "restore", "rollback", "backups list", "completion"} <= names
    assert len(ALL) >= 20


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=[" ".join(p) for p, _ in ALL])
def test_help_has_text_options_and_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.startswith(f"Usage: cli {' '.join(path)}")
    command = cli
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    assert command.help
    assert " ".join(command.help.split("\n\n")[0].split()) in " ".join(text.split())
    # the example is the help's last paragraph, a real d1ops command line
    description = text.split("Options:")[0].rstrip()
    example = description.rsplit("Example", 1)
    assert len(example) == 2, f"{' '.join(path)}: no example in its help"
    assert "  d1ops " in example[1]
    if not isinstance(command, click.Group):
        assert "-q, --quiet" in text and "-v, --verbose" in text


def test_group_help_lists_exit_codes_and_completion() -> None:
    text = " ".join(CliRunner().invoke(cli, ["--help"]).output.split())
    assert "Exit codes: 0 done; 1 operation failed; 2 usage or config error; 3 pending" in text
    assert "d1ops completion bash|zsh|fish" in text


def _fill(command: click.Command) -> list[str]:
    """Required arguments and options filled with 'dev' (enough to reach the config)."""
    args: list[str] = []
    for param in command.params:
        if isinstance(param, click.Argument) and param.required:
            args.append("dev")
        elif isinstance(param, click.Option) and param.required:
            args += [param.opts[-1], "3" if param.type is click.INT else "dev"]
    return args


JSON_COMMANDS = [(p, c) for p, c in LEAVES if any(getattr(o, "name", "") == "as_json" for o in c.params)]


@pytest.mark.parametrize("path", [p for p, _ in JSON_COMMANDS], ids=[" ".join(p) for p, _ in JSON_COMMANDS])
def test_json_errors_parse_for_every_command_with_json(path: tuple[str, ...], tmp_path: Path) -> None:
    command = dict(JSON_COMMANDS)[path]
    missing = tmp_path / "nowhere.yaml"
    result = CliRunner().invoke(cli, ["--config", str(missing), *path, *_fill(command), "--json"])
    document = json.loads(result.stdout)
    assert "\x1b" not in result.output
    if path == ("doctor",):  # diagnosing a broken config is doctor's job: its checks, one failed, exit 1
        assert result.exit_code == 1 and document["failed"] is True
        assert any("nowhere.yaml" in c["detail"] for c in document["checks"]), document
        return
    assert result.exit_code == 2, result.output
    assert document["exit_code"] == 2 and "nowhere.yaml" in document["error"]


def test_json_commands_cover_the_readme() -> None:
    names = {" ".join(p) for p, _ in JSON_COMMANDS}
    assert {"migrate", "promote", "rollback", "status", "execute", "backup", "restore", "lint", "rehearse"} <= names


# -- completion ---------------------------------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path: Path) -> Proj:
    proj = make_project(tmp_path / "project")
    folder = proj.root / "backups" / "production" / "20261125T101500Z-full"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    (proj.root / "backups" / "production" / ".20261125T111500Z-partial").mkdir()
    return proj


def complete(proj: Proj, words: list[str], incomplete: str) -> list[str]:
    completer = ShellComplete(cli, {}, "d1ops", COMPLETE_VAR)
    return [item.value for item in completer.get_completions(["--config", str(proj.config), *words], incomplete)]


def test_completion_names_environments_migrations_and_backups(files: Proj) -> None:
    assert complete(files, ["migrate"], "") == ["dev", "staging", "production"]
    assert complete(files, ["promote", "--to"], "st") == ["staging"]
    assert complete(files, ["backup", "--env"], "p") == ["production"]
    assert complete(files, ["rollback", "staging", "--to"], "") == ["0001_initial_schema.sql", "0002_sample_data.sql"]
    assert complete(files, ["restore"], "2026") == ["20261125T101500Z-full"]  # not the partial one
    assert complete(files, ["backups", "verify"], "") == ["20261125T101500Z-full"]
    assert complete(files, ["restore", "x", "--env"], "d") == ["dev"]


def test_completion_of_databases_and_without_a_config(files: Proj, tmp_path: Path) -> None:
    ctx = cli.make_context("d1ops", ["--config", str(files.config)], resilient_parsing=True)
    assert [i.value for i in complete_database(ctx, cli.params[0], "")] == ["DB"]
    nowhere = Proj(tmp_path / "empty")
    assert complete(nowhere, ["migrate"], "") == []  # no config: nothing, and no error while typing


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_script(shell: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0
    assert COMPLETE_VAR in result.output and f"{shell}_complete" in result.output


def test_completion_refuses_an_unknown_shell() -> None:
    result = CliRunner().invoke(cli, ["completion", "tcsh"])
    assert result.exit_code == 2 and "tcsh" in result.output


# -- start-up ---------------------------------------------------------------------------------------------------
HEAVY = (
    "sh",
    "d1ops.wrangler.runner",
    "d1ops.run.sequence",
    "d1ops.backups.take",
    "d1ops.changes.restore",
    "d1ops.sql.schema",
    "sqlite3",
)
PROBE = """
import sys
from d1ops.cli import main
sys.argv = ["d1ops", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("LOADED", *sorted(m for m in {heavy} if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--help"], {}),
        (["--version"], {}),
        (["migrate", "--help"], {}),
        ([], {COMPLETE_VAR: "bash_complete", "COMP_WORDS": "d1ops migrate ", "COMP_CWORD": "2"}),
    ],
    ids=["help", "version", "command help", "completion"],
)
def test_help_version_and_completion_import_no_core(args: list[str], env: dict[str, str]) -> None:
    """What start-up costs is measured in `make bench`; here: the heavy modules are not even imported."""
    import os

    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert "LOADED" in proc.stderr, proc.stderr
    assert proc.stderr.rsplit("LOADED", 1)[1].split() == []
    if env:
        assert proc.stdout.split() == ["plain,dev", "plain,staging", "plain,production"]
    else:
        assert proc.stdout.startswith(("Usage: d1ops", f"d1ops 0.1.0, wrangler {WRANGLER_VERSION}"))
