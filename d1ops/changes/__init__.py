"""One module per command that changes a database: its plan and what it wants applied."""
