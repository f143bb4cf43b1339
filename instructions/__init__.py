"""Shipped material for ``modaverse generate-instructions`` (ModaVerse paper, section 3.3).

- ``templates/``: the system prompt and one prompt template per instruction kind
  (``input-side``, ``output-side``, ``reasoning``), filled with :class:`string.Template`
  placeholders (``$inputs``, ``$examples``, ``$references``, ``$target``, ``$capabilities``);
- ``seeds.jsonl``: hand-written instruction/response pairs covering every combination of
  inputs (none, image, video, audio and their mixes) and outputs (text, image, video, audio);
- ``references.jsonl``: language references, prompts in each generator's own style.

``--templates``, ``--seeds`` and ``--references`` replace any of them with your own files.
"""

from pathlib import Path

#: The folder these files live in, installed or in a checkout.
ROOT = Path(__file__).resolve().parent
#: The paper's instruction kinds, one template each: describe the inputs, call a generator, infer.
KINDS: tuple[str, ...] = ("input-side", "output-side", "reasoning")
