"""Instruction-data generation (ChatGPT-style prompting with seeds, captions and references).

Filled by the ``modaverse generate-instructions`` work: prompt templates, seed pairs and
language references ship here as package data.
"""
