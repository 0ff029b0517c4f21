"""Test support: a fake Cloudflare D1 REST API that the real wrangler binary can talk to."""
