"""Stage 5: the meta-response the LLM writes: its schema, and the grammar that makes decoding produce it."""
