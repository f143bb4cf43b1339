"""What every layer uses and that knows no layer: errors, atomic writes, JSONL, the cache folder, the hub probe, devices, the modality table."""
