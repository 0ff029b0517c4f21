"""SQL without processes: the tokenizer and quoting, schema objects, read-only decisions, table diffs."""
