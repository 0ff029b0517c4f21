"""The wrangler seam: the only code that starts a process (runner, output, finding wrangler, its config)."""
