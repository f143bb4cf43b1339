"""The offline tiny kit's tokenizer, trained in code (deterministic, nothing downloaded).

Nothing below the pipeline imports it: the pipeline hands it to an LLM built from ``llm.arch``, and
the kit's generators (``model_zoo/tiny.py``, found by the zoo as plug-ins) give it to their text encoders.
"""
