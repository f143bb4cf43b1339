"""Text-to-audio with AudioLDM, from diffusers' ``AudioLDMPipeline`` (not the stand-alone package).

Official ModaVerse settings: ``cvssp/audioldm-l-full``, 10 steps, 5 s, guidance 2.5, 16 kHz.
The sample rate is the vocoder's own, so a checkpoint at another rate is written right.
"""

from __future__ import annotations

from pathlib import Path

from model_zoo import tiny
from model_zoo.base import COMMON_OPTIONS, DiffusersGenerator
from model_zoo.writers import write_wav


class AudioLDM(DiffusersGenerator):
    name = "audioldm"
    pipeline = "AudioLDMPipeline"
    options = COMMON_OPTIONS | {"duration", "format"}

    def build_tiny(self):
        from diffusers import AudioLDMPipeline

        tok = tiny.tokenizer()
        unet, vae, text, vocoder = tiny.audioldm_parts(tok)
        return AudioLDMPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=tiny.scheduler(),
                                vocoder=vocoder)

    def render(self, prompt, params, out_dir: Path, inputs=()) -> list[Path]:
        kwargs = self.common_kwargs(params)
        if "duration" in params:
            kwargs["audio_length_in_s"] = float(params["duration"])
        audio = self.pipe(prompt=prompt, **kwargs).audios[0]
        rate = int(self.pipe.vocoder.config.sampling_rate)
        return [write_wav(audio, out_dir, "audio", sample_rate=rate, fmt=params.get("format", "wav"))]
