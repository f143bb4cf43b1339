"""PANNs Cnn14 in pure PyTorch: the audio classifier behind AudioLDM's FD and IS.

AudioLDM (and the ModaVerse paper, Table 6) report FD and IS over Cnn14 features at
16 kHz: FD between the 2048-d embeddings of generated and reference clips, IS over the
softmax of the 527 AudioSet logits. The upstream code (panns-inference, audioldm_eval)
computes the log-mel front end with torchlibrosa and librosa, and audioldm_eval pulls in
torchaudio, which this project cannot install. Here the front end is ``torch.stft`` (a
periodic Hann window, centred, reflect-padded, as torchlibrosa's convolution computes it)
and the Slaney mel filterbank of ``transformers.audio_utils``, which reproduces
``librosa.filters.mel``. The network keeps upstream's module names, so the released
``Cnn14_16k_mAP=0.438.pth`` loads as it is; its front-end buffers (the DFT kernels and the
mel matrix) are recomputed rather than read. ``tests/test_generation_metrics.py`` checks the
outputs against panns-inference's own ``Cnn14`` on the same weights.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

WEIGHTS_URL = "https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth"
FRONT_END_KEYS = ("spectrogram_extractor.", "logmel_extractor.")  # recomputed, not loaded


class Cnn14Spec(BaseModel):
    """Front end and width; the defaults are Cnn14_16k's (AudioLDM's evaluation model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sample_rate: int = Field(16000, description="audio is resampled to this rate (Hz)")
    window_size: int = Field(512, description="STFT window and FFT size (samples)")
    hop_size: int = Field(160, description="STFT hop (samples)")
    mel_bins: int = Field(64, description="mel bands")
    fmin: float = Field(50.0, description="lowest mel frequency (Hz)")
    fmax: float = Field(8000.0, description="highest mel frequency (Hz)")
    classes: int = Field(527, description="AudioSet classes of the classifier head")
    width: int = Field(64, description="channels of the first block (doubling per block, 64 in Cnn14)")


@lru_cache(maxsize=4)
def _mel_matrix(spec: Cnn14Spec) -> torch.Tensor:
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(num_frequency_bins=spec.window_size // 2 + 1, num_mel_filters=spec.mel_bins,
                           min_frequency=spec.fmin, max_frequency=spec.fmax, sampling_rate=spec.sample_rate,
                           norm="slaney", mel_scale="slaney")
    return torch.from_numpy(np.asarray(bank, dtype=np.float32))  # [freq, mel]


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.avg_pool2d(x, pool)


class Cnn14(nn.Module):
    """Waveforms ``[N, samples]`` at ``spec.sample_rate`` -> (embedding ``[N, 32 w]``, logits ``[N, classes]``)."""

    def __init__(self, spec: Cnn14Spec | None = None):
        super().__init__()
        self.spec = spec = spec or Cnn14Spec()
        w = spec.width
        self.num_features = 32 * w
        self.bn0 = nn.BatchNorm2d(spec.mel_bins)
        widths = [1, w, 2 * w, 4 * w, 8 * w, 16 * w, 32 * w]
        for i in range(6):
            self.add_module(f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(32 * w, 32 * w)
        self.fc_audioset = nn.Linear(32 * w, spec.classes)

    def log_mel(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``[N, samples]`` -> ``[N, 1, frames, mel]`` power in dB (ref 1, floor 1e-10, no top_db)."""
        n = self.spec.window_size
        window = torch.hann_window(n, periodic=True, dtype=waveforms.dtype, device=waveforms.device)
        stft = torch.stft(waveforms, n, hop_length=self.spec.hop_size, window=window, center=True,
                          pad_mode="reflect", return_complex=True)
        power = stft.abs().square().transpose(1, 2)  # [N, frames, freq]
        mel = power @ _mel_matrix(self.spec).to(power)
        return (10 * torch.log10(mel.clamp_min(1e-10)))[:, None]

    def forward(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.log_mel(waveforms.to(self.fc1.weight.dtype))
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, 2 if i < 5 else 1)
        x = x.mean(dim=3)
        x = x.max(dim=2).values + x.mean(dim=2)
        embedding = F.relu(self.fc1(x))
        return embedding, self.fc_audioset(embedding)
