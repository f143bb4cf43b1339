"""Packaged configs (installed as ``modaverse.configs``); see ``modaverse configs``."""
