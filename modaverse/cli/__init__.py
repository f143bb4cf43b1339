"""Stage 9: the ``modaverse`` command, one module per command group."""
