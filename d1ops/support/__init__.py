"""Small helpers every layer uses: private files and times, background work, the progress line."""
