"""The run: the one path that changes a database (sequence, apply batch, lease, tracking, report, safety)."""
