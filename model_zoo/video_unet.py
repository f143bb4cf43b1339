"""ModelScope's video UNet with the order of its frames: sinusoidal frame positions in its temporal attention.

``UNet3DConditionModel`` attends over a clip's frames without positions; only its temporal
convolutions' zero padding tells the first frame from the last. Here every temporal attention block
adds the sinusoidal frame positions that AnimateDiff's motion modules carry, and nothing else
changes: the same weights, config and pipeline (``TextToVideoSDPipeline``), so a diffusers folder
names this class and loads it like any UNet. The shipped tiny video generator was trained with it;
an ablation later found the positions unneeded there (with the text stage and a schedule whose last
step is pure noise, ModelScope's own UNet moved 16 of 16 clips the asked way; docs/zoo.md).
"""

from __future__ import annotations

import inspect

from diffusers import (
    ModelMixin,  # noqa: F401  diffusers' loader looks a component's base class up in its module
    UNet3DConditionModel,
)


def _max_frames() -> int:
    """The most frames a render may ask (RenderParams' bound)."""
    from annotated_types import Le

    from modaverse.meta.schema import RenderParams

    return next(m.le for m in RenderParams.model_fields["frames"].metadata if isinstance(m, Le))


class FrameAwareUNet3D(UNet3DConditionModel):
    def __init__(self, *args, **kwargs):
        from diffusers.models.attention import BasicTransformerBlock
        from diffusers.models.embeddings import SinusoidalPositionalEmbedding

        super().__init__(*args, **kwargs)
        for name, block in self.named_modules():
            temporal = name.startswith("transformer_in.") or ".temp_attentions." in name
            if temporal and isinstance(block, BasicTransformerBlock):
                block.pos_embed = SinusoidalPositionalEmbedding(block.norm1.normalized_shape[0], _max_frames())
                block.pos_embed.register_buffer("pe", block.pos_embed.pe, persistent=False)  # made, not saved


# diffusers reads a model's config keys from its __init__'s signature: the parent's
FrameAwareUNet3D.__init__.__signature__ = inspect.signature(UNet3DConditionModel.__init__)
