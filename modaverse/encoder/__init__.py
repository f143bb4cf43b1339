"""Stage 2: files -> ImageBind embeddings (the native port, its checkpoint loader, and the feature cache)."""
