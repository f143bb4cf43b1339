"""Text-to-image with Stable Diffusion: SD-1.x, SD-2.x and SDXL checkpoints.

``AutoPipelineForText2Image`` reads the checkpoint's ``model_index.json`` and picks the
right pipeline class, so one plug-in serves all three families. Official ModaVerse
settings (50 steps, guidance 7.5, 512x512) are the packaged config's defaults.
"""

from __future__ import annotations

from pathlib import Path

from modaverse.media.writers import write_png
from model_zoo.base import COMMON_OPTIONS, DiffusersGenerator


class StableDiffusion(DiffusersGenerator):
    name = "stable-diffusion"
    pipeline = "AutoPipelineForText2Image"
    options = COMMON_OPTIONS | {"width", "height"}

    def render(self, prompt, params, out_dir: Path, inputs=()) -> list[Path]:
        images = self.pipe(prompt=prompt, **self.common_kwargs(params)).images
        return [write_png(img, out_dir, "image") for img in images]
