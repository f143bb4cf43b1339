"""Text-to-audio's training: an AudioLDM whose mel VAE, vocoder and UNet all learn the synthetic sounds.

AudioLDM renders in three hands: the UNet denoises latents conditioned on the prompt's CLAP
embedding (a class embedding, not cross-attention), the VAE decodes them to a log-mel spectrogram,
and a HiFi-GAN vocoder turns that into a waveform. A random decoder or vocoder renders noise
whatever the UNet learns, so the stages run in that order of dependence: the VAE on log-mels of
the world's sounds, the vocoder from those log-mels back to their waveforms (HiFi-GAN's log-mel
L1 at three resolutions, without its discriminators; half its slices tones and sweeps at random
pitches, below), then the UNet, as
:class:`~modaverse.training.generators.GeneratorRecipe` trains every UNet.

Why log-mels only: a magnitude loss on fine STFT bins costs a tone a few bins off more than
silence, and a vocoder fed a steady mel repeats itself every hop (160 samples), so its tones
can only sit on multiples of 100 Hz. With STFT terms it stayed near silent on tones; mel bands
are wide enough that the nearest such tone scores well, and a tone emerges after about 2,000
steps at 128 channels (``benchmarks/vocoder.py`` judges a vocoder alone).

The log-mel is the vocoder's own input: 16 kHz, a hop of 160 samples (the vocoder's upsampling,
so AudioLDM's 100 frames a second), ``log10(max(mel, 1e-5))``, as SpeechT5's HiFi-GAN reads it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from modaverse.data import scenes
from modaverse.training.generators import GeneratorRecipe

RATE, HOP, N_FFT, MELS = scenes.AUDIO_RATE, 160, 1024, 32
#: The vocoder's upsampling (their product is the hop) and its widths: a tiny HiFi-GAN.
UPSAMPLE = (8, 5, 4)
#: Mel frames of the slices the vocoder trains on.
VOCODER_FRAMES = 32
#: The vocoder's loss: log-mel L1 at its own resolution, and at these (n_fft, hop, mel bands).
EXTRA_MELS = ((512, 128, 24), (2048, 256, 48))


class AudioGeneratorRecipe(GeneratorRecipe):
    """The text-to-audio run: stages vae, vocoder, unet."""

    def _build(self):
        from diffusers import AudioLDMPipeline, AutoencoderKL, UNet2DConditionModel
        from transformers import (
            ClapTextConfig,
            ClapTextModelWithProjection,
            SpeechT5HifiGan,
            SpeechT5HifiGanConfig,
        )

        from model_zoo import tiny

        z = self.z
        tok = tiny.tokenizer()
        width = z.text_hidden
        text = ClapTextModelWithProjection(ClapTextConfig(
            vocab_size=len(tok), hidden_size=width, intermediate_size=2 * width, num_attention_heads=4,
            num_hidden_layers=2, projection_dim=width, max_position_embeddings=80, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).requires_grad_(False).eval()
        n = len(z.audio_vae_channels)
        vae = AutoencoderKL(block_out_channels=list(z.audio_vae_channels), in_channels=1, out_channels=1, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
                            norm_num_groups=8)
        frames = round(z.seconds * RATE / HOP) // 2 ** (n - 1)
        unet = UNet2DConditionModel(
            block_out_channels=tuple(z.unet_channels), layers_per_block=z.unet_layers, sample_size=frames,
            in_channels=4, out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=width, attention_head_dim=8,
            class_embed_type="simple_projection", projection_class_embeddings_input_dim=width,
            class_embeddings_concat=True, norm_num_groups=8)
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
            model_in_dim=MELS, sampling_rate=RATE, upsample_initial_channel=z.vocoder_channels, upsample_rates=list(UPSAMPLE),
            upsample_kernel_sizes=[2 * r for r in UPSAMPLE], resblock_kernel_sizes=[3, 7],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]], normalize_before=False))
        return AudioLDMPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=tiny.scheduler(),
                                vocoder=vocoder)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """``[B, samples]`` -> ``[B, frames, MELS]``, one frame per hop (the vocoder's input)."""
        return _log_mel(wave, N_FFT, HOP, _mel_basis(N_FFT, MELS))[:, : wave.shape[-1] // HOP]

    def _waves(self, step: int, n: int) -> tuple[list[str], torch.Tensor]:
        from modaverse.data import samples

        batch = [samples.audio(self.seed, step * n + i, self.z.seconds) for i in range(n)]
        return [s.caption for s in batch], torch.from_numpy(np.stack([s.array for s in batch]))

    def _batch(self, step: int) -> tuple[list[str], torch.Tensor, None]:
        """Captions and log-mels as the VAE sees them, ``[B, 1, frames, MELS]``."""
        captions, waves = self._waves(step, self.z.audio_batch_size)
        return captions, self.log_mel(waves)[:, None], None

    def _vocoder_step(self, step: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        """On a random 0.32-s slice of each sound (the vocoder is convolutional: a quarter of the cost)."""
        _, waves = self._waves(step, self.z.vocoder_batch_size)
        sweeps = round(len(waves) * self.z.vocoder_sweep_share)
        waves[:sweeps] = _sweeps(sweeps, waves.shape[-1], g)
        frames = waves.shape[-1] // HOP
        start = int(torch.randint(0, max(1, frames - VOCODER_FRAMES + 1), (1,), generator=g)) * HOP
        waves = waves[:, start : start + VOCODER_FRAMES * HOP]
        mel = self.log_mel(waves)
        out = self.pipe.vocoder(mel)[..., : waves.shape[-1]]
        extra = sum(F.l1_loss(_log_mel(out, n, hop, _mel_basis(n, bands)), _log_mel(waves, n, hop, _mel_basis(n, bands)))
                    for n, hop, bands in EXTRA_MELS)
        return {"mel_l1": F.l1_loss(self.log_mel(out), mel), "mel_multi": extra / len(EXTRA_MELS)}

    def _encode_text(self, captions: list[str]) -> torch.Tensor:
        """AudioLDM's conditioning: the CLAP projection, L2-normalised (its pipeline's ``encode_prompt``)."""
        tok = self.pipe.tokenizer
        ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt")
        embeds = self.pipe.text_encoder(ids.input_ids, attention_mask=ids.attention_mask).text_embeds
        return F.normalize(embeds, dim=-1)

    def _predict(self, noisy: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.pipe.unet(noisy, t, encoder_hidden_states=None, class_labels=cond).sample


def _sweeps(n: int, samples: int, g: torch.Generator) -> torch.Tensor:
    """``[n, samples]`` sine waves gliding between two pitches drawn log-uniformly from 100 Hz to 4 kHz
    (half of them holding one pitch), at random loudness over a little noise."""
    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, 1, generator=g)

    lo, hi = np.log(100.0), np.log(4000.0)
    f0, f1 = uniform(lo, hi).exp(), uniform(lo, hi).exp()
    f1 = torch.where(torch.rand(n, 1, generator=g) < 0.5, f0, f1)
    u = torch.arange(samples, dtype=torch.float64) / samples
    f0, f1 = f0.double(), f1.double()
    phase = 2 * np.pi * torch.cumsum(f0 * (f1 / f0) ** u, dim=-1) / RATE + uniform(0, 2 * np.pi)
    noise = torch.randn(n, samples, generator=g) * uniform(0.0, 0.05)
    return (uniform(0.1, 0.9) * torch.sin(phase) + noise).float()


@lru_cache
def _mel_basis(n_fft: int, bands: int) -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    return torch.from_numpy(mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=bands, min_frequency=0.0,
                                            max_frequency=RATE / 2, sampling_rate=RATE, norm="slaney",
                                            mel_scale="slaney")).float()


def _log_mel(wave: torch.Tensor, n_fft: int, hop: int, basis: torch.Tensor) -> torch.Tensor:
    """``log10(max(mel, 1e-5))`` of ``[B, samples]``, ``[B, frames, bands]`` (SpeechT5's HiFi-GAN's input)."""
    spec = torch.stft(wave, n_fft, hop, window=torch.hann_window(n_fft), center=True, return_complex=True).abs()
    return torch.log10((spec.transpose(1, 2) @ basis).clamp(min=1e-5))
