"""Training data: the JSONL record format, importers, validation and the synthetic set."""
