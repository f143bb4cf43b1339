"""The papers' benchmarks: reference metric implementations, wrapped with checked inputs.

- :mod:`.captions`: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE and SPIDEr through
  pycocoevalcap, the implementation the published numbers come from.
"""
