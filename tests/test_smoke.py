from tests.conftest import Proj


def test_template_project_is_migrated_on_dev(proj: Proj) -> None:
    assert {"users", "sessions", "api_keys", "posts", "audit_logs", "settings"} <= proj.tables("dev")
    assert proj.query("SELECT name FROM d1_migrations ORDER BY id") == [
        ("0001_initial_schema.sql",),
        ("0002_sample_data.sql",),
    ]
