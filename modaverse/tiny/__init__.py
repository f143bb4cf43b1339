"""The offline tiny kit: a tokenizer trained in code and tiny generators, all built from configs with fixed seeds.

Nothing below the pipeline imports it; the zoo finds its generators as plug-ins (entry points), and
the pipeline hands its tokenizer to an LLM built from ``llm.arch``.
"""
