"""Stage 4: the language model: where it comes from, how it is wrapped for training, and how conversations become its prompts."""
