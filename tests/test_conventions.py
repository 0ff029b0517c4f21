"""The user's conventions: `new` keeps the folder's prefix width, lint judges names by it, a positional
environment to `backup` is caught, and the README's table of how each command takes its environment is the
one the click commands define."""

from __future__ import annotations

import re
from pathlib import Path

import click

from d1ops.cli import cli
from d1ops.cli.completion import complete_env
from d1ops.project.migrations import discover_migrations, new_migration, next_width, prefix_width
from tests.conftest import REPO, Proj, make_project


def test_new_in_a_three_digit_history_writes_the_next_three_digit_number(tmp_path: Path) -> None:
    proj = make_project(tmp_path / "p", migrations_from=None)
    for n in range(1, 36):
        proj.write(f"migrations/{n:03d}_step_{n}.sql", f"CREATE TABLE t{n} (id INTEGER PRIMARY KEY);\n")
        proj.write(f"migrations/down/{n:03d}_step_{n}.sql", f"DROP TABLE t{n};\n")
    result = proj.run("new", "add_tags")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Created migrations/036_add_tags.sql (the migration)\n")
    assert "Created migrations/down/036_add_tags.sql" in result.output
    created = proj.migrations / "036_add_tags.sql"
    assert created.read_text().startswith("-- Migration number: 036\t")
    assert (proj.migrations / "down" / "036_add_tags.sql").is_file()
    assert not list(proj.migrations.glob("0036_*"))
    created.write_text("CREATE TABLE tags (id INTEGER PRIMARY KEY);\n")
    (proj.migrations / "down" / "036_add_tags.sql").write_text("DROP TABLE tags;\n")
    # lint judges the names by the folder's width: 001–036 are fine, a four-digit newcomer is not
    assert proj.run("lint").output == "36 migration(s), 0 error(s), 0 warning(s).\n"
    proj.write("migrations/0037_four.sql", "SELECT 1;\n")
    result = proj.run("lint")
    assert result.exit_code == 1
    assert "error: 0037_four.sql: is not named NNN_name.sql (three digits like the folder's other files" in (
        result.output
    )


def test_new_keeps_four_digits_and_continues_drizzles_history_from_0000(tmp_path: Path) -> None:
    folder = tmp_path / "drizzle"
    folder.mkdir()
    for name in ("0000_brave_hulk.sql", "0001_clever_storm.sql", "0002_quiet_moon.sql"):
        (folder / name).write_text("SELECT 1;\n")
    assert new_migration(folder, "add_posts").name == "0003_add_posts.sql"
    only_zero = tmp_path / "fresh-drizzle"
    only_zero.mkdir()
    (only_zero / "0000_init.sql").write_text("SELECT 1;\n")
    assert new_migration(only_zero, "second").name == "0001_second.sql"
    found = discover_migrations(only_zero)
    assert [f.file for f in found.errors] == []  # 0000_ and 0001_ are four-digit names, no gap
    assert new_migration(tmp_path / "empty", "first").name == "0001_first.sql"  # as `wrangler d1 migrations create`


def test_lint_judges_by_most_files_and_new_follows_the_newest() -> None:
    assert prefix_width([]) == 4
    assert prefix_width(["001_a.sql", "002_b.sql", "0003_c.sql"]) == 3
    assert prefix_width(["001_a.sql", "0002_b.sql"]) == 4
    assert prefix_width(["1_a.sql", "notes.sql"]) == 4
    assert next_width(["001_a.sql", "002_b.sql", "0003_c.sql"]) == 4  # the history moved to four digits
    assert next_width(["035_z.sql", "0001_a.sql"]) == 3
    assert next_width(["notes.sql"]) == 4


def test_a_positional_environment_to_backup_asks_did_you_mean_env(proj: Proj) -> None:
    result = proj.run("backup", "dev")
    assert result.exit_code == 2
    assert "'dev' is an environment, not a table: did you mean --env dev?" in result.output
    assert "No such table" not in result.output
    assert list((proj.root / "backups").glob("dev/*")) == []  # nothing was started


# -- the README's table of how each command takes its environment ---------------------------------------------
def _commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found.update(_commands(command, f"{prefix}{name} "))
        else:
            found[f"{prefix}{name}"] = command
    return found


def environment_forms(command: click.Command) -> str:
    """How the command takes an environment, from its parameters: those that complete environment names."""
    forms = []
    for param in command.params:
        if getattr(param, "_custom_shell_complete", None) is not complete_env:
            continue
        if isinstance(param, click.Argument):
            forms.append("`ENV` (positional)" if param.required else "`[ENV]` (positional)")
        else:
            forms.append(f"`{param.opts[0]} ENV`" + (" (required)" if param.required else ""))
    return ", ".join(forms) or "none"


def test_the_readme_table_of_environments_is_the_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### How each command takes its environment", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`d1ops ([a-z ]+)`", cells[0]) if len(cells) == 3 else None
        if match:
            rows[match.group(1)] = cells[1]
    expected = {name: environment_forms(command) for name, command in _commands(cli).items()}
    assert rows == expected
