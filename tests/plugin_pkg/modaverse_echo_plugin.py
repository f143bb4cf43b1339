"""A minimal generator living outside the modaverse repository: writes the prompt to a text file."""

from pathlib import Path


class EchoText:
    name = "echo-text"
    options = frozenset({"seed", "repeat"})

    def __init__(self, capability, config):
        self.capability, self.config, self._loaded = capability, config, False

    @property
    def loaded(self):
        return self._loaded

    def load(self):
        self._loaded = True

    def render(self, prompt, params, out_dir, inputs=()):
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"echo-{params['seed']}.txt"
        path.write_text(prompt * int(params.get("repeat", 1)))
        return [path]

    def unload(self):
        self._loaded = False

    def memory_bytes(self):
        return 0


class HalfAGenerator:
    """Registered like a generator but without its methods: the zoo must refuse it, in one line."""

    name = "half-a-generator"
    options = frozenset()
