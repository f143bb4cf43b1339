"""Instruction-data generation with an OpenAI-compatible chat API (``modaverse generate-instructions``).

- :mod:`.sources`: captions, language references, seed examples and templates, validated;
- :mod:`.tasks`: what each request asks for, a pure function of (seed, index);
- :mod:`.replies`: a reply checked against the record and meta-response schemas;
- :mod:`.dedup`: near-duplicate detection (MinHash LSH);
- :mod:`.engine`: async requests, rate limit, crash-safe output and resume, accounting.
"""
