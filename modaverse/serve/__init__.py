"""``modaverse serve``: the web demo and the REST API on one loopback server.

- :mod:`.service`: the shared assistant: one model, a bounded queue, upload checks;
- :mod:`.api`: FastAPI routes, the OpenAPI schema, and the mounted demo;
- :mod:`.ui`: the Gradio chat.
"""
