"""d1ops: safe, boring schema changes for Cloudflare D1."""

__version__ = "0.1.0"
