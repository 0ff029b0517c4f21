"""Project: its config, migration files, and the read-only views of it (init, doctor, status)."""
