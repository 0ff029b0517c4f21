"""The D1 REST API, for fleets: one HTTP client (client.py), imported only when a fleet runs."""
