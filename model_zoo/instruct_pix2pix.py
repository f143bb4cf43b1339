"""Image editing with InstructPix2Pix: "make it snowy" keeps the input's layout.

Text-to-image re-draws a scene from a caption and loses the input's composition, which
the ModaVerse paper admits as a failure case (its Fig. 5a). This plug-in edits the turn's
image input instead. The meta-response still cannot name a file: the image comes from
the turn's own inputs (the last image attached).
"""

from __future__ import annotations

from pathlib import Path

from modaverse.core.errors import ModaverseError
from modaverse.media.writers import write_png
from model_zoo.base import COMMON_OPTIONS, DiffusersGenerator


class InstructPix2Pix(DiffusersGenerator):
    name = "instruct-pix2pix"
    pipeline = "StableDiffusionInstructPix2PixPipeline"
    options = COMMON_OPTIONS | {"image_guidance", "width", "height"}

    def check_inputs(self, prompt, params, inputs=()) -> None:
        if not any(i.modality == "image" for i in inputs):
            raise ModaverseError(f"{self.capability} edits an image, but this turn has no image input "
                                 "(attach one; to `modaverse render`, give it with -i FILE)")

    def render(self, prompt, params, out_dir: Path, inputs=()) -> list[Path]:
        from PIL import Image

        from modaverse.media.image import open_image

        self.check_inputs(prompt, params, inputs)
        images = [i for i in inputs if i.modality == "image"]
        source = open_image(images[-1].path).convert("RGB")  # the same size guard as every decode
        kwargs = self.common_kwargs(params)
        # The pipeline edits at the input's own size; width/height (when given) resize it first, to a
        # multiple of what the VAE and the UNet's levels divide by (64 for Stable Diffusion's).
        unit = self.pipe.vae_scale_factor * 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)
        size = (kwargs.pop("width", source.width), kwargs.pop("height", source.height))
        size = (max(unit, size[0] // unit * unit), max(unit, size[1] // unit * unit))
        if size != source.size:
            source = source.resize(size, Image.Resampling.BICUBIC)
        if "image_guidance" in params:
            kwargs["image_guidance_scale"] = params["image_guidance"]
        out = self.pipe(prompt=prompt, image=source, **kwargs).images
        return [write_png(img, out_dir, "edit") for img in out]
