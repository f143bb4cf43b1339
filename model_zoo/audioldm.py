"""Text-to-audio with AudioLDM and AudioLDM 2, from diffusers' pipelines (not the stand-alone package).

Official ModaVerse settings: ``cvssp/audioldm-l-full``, 10 steps, 5 s, guidance 2.5, 16 kHz.
AudioLDM 2 (``cvssp/audioldm2``, ``audioldm2-music``) adds a T5 encoder and a GPT-2 prior,
for better prompt following. The sample rate is the vocoder's own, so a checkpoint at
another rate is written right.
"""

from __future__ import annotations

from pathlib import Path

from modaverse.media.writers import write_wav
from model_zoo.base import COMMON_OPTIONS, DiffusersGenerator


class AudioLDM(DiffusersGenerator):
    name = "audioldm"
    pipeline = "AudioLDMPipeline"
    options = COMMON_OPTIONS | {"duration", "format"}

    def render(self, prompt, params, out_dir: Path, inputs=()) -> list[Path]:
        return self._render_audio(prompt, params, out_dir)

    def _render_audio(self, prompt, params, out_dir: Path) -> list[Path]:
        kwargs = self.common_kwargs(params)
        if "duration" in params:
            kwargs["audio_length_in_s"] = float(params["duration"])
        audio = self.pipe(prompt=prompt, **kwargs).audios[0]
        rate = int(self.pipe.vocoder.config.sampling_rate)
        return [write_wav(audio, out_dir, "audio", sample_rate=rate, fmt=params.get("format", "wav"))]


class AudioLDM2(AudioLDM):
    name = "audioldm2"
    pipeline = "AudioLDM2Pipeline"

    def load(self) -> None:
        super().load()
        patch_language_model(self.pipe.language_model)


def patch_language_model(lm) -> None:
    """AudioLDM 2's prior is a bare ``GPT2Model``, which lost its generation helpers in transformers 5;
    diffusers 0.42 still calls one of them (diffusers issue #12630). Lend it GenerationMixin's."""
    import types

    from transformers import GenerationMixin

    if not hasattr(lm, "_update_model_kwargs_for_generation"):
        lm._update_model_kwargs_for_generation = types.MethodType(
            GenerationMixin._update_model_kwargs_for_generation, lm)
