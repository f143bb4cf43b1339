"""Audio files -> ImageBind's [clips, 1, mel, frames] filterbank input, without torchaudio.

Three pieces reproduce upstream's numbers: a windowed-sinc resampler with torchaudio's
default kernel, the clip placement in :mod:`modaverse.media.clips`, and the Kaldi
filterbank, computed by ``transformers.audio_utils`` (maintained, and used by HF's own AST
feature extractor). Two upstream quirks are kept on purpose because the official
checkpoint was trained with them: each clip's mean is subtracted *in place* on a view of
the whole waveform (so overlapping clips of a file under 6 s affect each other), and a
stereo clip's mean covers both channels while the filterbank reads only the first.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from modaverse.config import AudioSpec
from modaverse.core.errors import MediaError
from modaverse.media.clips import clip_timepoints
from modaverse.media.sniff import check_complete, declared_seconds, decoding

KALDI_EPS = float(np.finfo(np.float32).eps)


def decode_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Returns float32 samples [channels, n] in [-1, 1] and the file's sample rate.

    libsndfile (wav/flac/ogg) is tried first: for PCM it yields exactly int/2^15 like
    upstream's decoder. Everything else (mp3, m4a/aac, webm, mp4) goes through FFmpeg,
    which also reports truncation instead of printing warnings of its own.
    """
    import soundfile as sf

    suffix = Path(path).suffix.lower()
    if suffix == ".wav":
        _check_wav_length(Path(path))
    try:
        if suffix not in (".wav", ".flac", ".ogg"):
            raise ValueError("not a libsndfile format")
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        samples = np.ascontiguousarray(data.T)
    except Exception:
        samples, sr = _decode_with_av(path)
    if samples.shape[1] == 0:
        raise MediaError(path, "audio stream holds no samples")
    return samples, int(sr)


def _check_wav_length(path: Path) -> None:
    """libsndfile quietly shortens a truncated WAV; compare the declared data size instead."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(12)[8:12] != b"WAVE":
            return
        while header := f.read(8):
            if len(header) < 8:
                break
            chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"data":
                have = size - f.tell()
                if length != 0xFFFFFFFF and length > have:
                    raise MediaError(path, f"truncated: the header declares {length} bytes of audio, the file holds {have}")
                return
            f.seek(length + (length & 1), 1)


def _decode_with_av(path: str | Path) -> tuple[np.ndarray, int]:
    import av

    with decoding(path, "audio"), av.open(str(path)) as container:
        if not container.streams.audio:
            raise MediaError(path, "no audio stream found")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=stream.rate)
        chunks = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
        rate = stream.rate
        declared = declared_seconds(container, stream)
    if not chunks:
        raise MediaError(path, "audio stream holds no samples")
    samples = np.concatenate(chunks, axis=1).astype(np.float32)
    check_complete(path, declared, samples.shape[1] / rate)
    return samples, int(rate)


@lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, width_zc: int, rolloff: float) -> tuple[torch.Tensor, int]:
    base = min(orig, new) * rolloff
    width = math.ceil(width_zc * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float32)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new + idx
    t = (t * base).clamp_(-width_zc, width_zc)
    window = torch.cos(t * math.pi / width_zc / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0), t.sin() / t) * window * (base / orig)
    return kernel, width


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int) -> torch.Tensor:
    """Band-limited resampling with a Hann-windowed sinc (6 zero crossings, rolloff 0.99).

    Same kernel and output length as ``torchaudio.functional.resample``'s defaults, which
    ImageBind's loader calls; the fixture checks it sample for sample.
    """
    if orig_freq == new_freq:
        return waveform
    g = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // g, new_freq // g
    kernel, width = _sinc_kernel(orig, new, 6, 0.99)
    shape = waveform.shape
    x = waveform.reshape(-1, shape[-1])
    n = x.shape[1]
    x = torch.nn.functional.pad(x, (width, width + orig))
    y = torch.nn.functional.conv1d(x[:, None], kernel.to(x.dtype), stride=orig)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)[:, : math.ceil(new * n / orig)]
    return y.reshape(*shape[:-1], -1)


@lru_cache(maxsize=4)
def _fbank_tables(sample_rate: int, num_mel_bins: int) -> tuple[np.ndarray, np.ndarray]:
    from transformers.audio_utils import mel_filter_bank, window_function

    window = window_function(400, "hann", periodic=False)
    with warnings.catch_warnings():  # Kaldi's 128 bins on a 512-point FFT leave one empty; so does upstream
        warnings.simplefilter("ignore", UserWarning)
        mel = mel_filter_bank(
            num_frequency_bins=257,
            num_mel_filters=num_mel_bins,
            min_frequency=20.0,
            max_frequency=sample_rate / 2,
            sampling_rate=sample_rate,
            norm=None,
            mel_scale="kaldi",
            triangularize_in_mel_space=True,
        )
    return window, mel


def kaldi_fbank(samples: np.ndarray, sample_rate: int, num_mel_bins: int) -> np.ndarray:
    """Kaldi log-mel filterbank [frames, mel]: 25 ms Hann frames, 10 ms shift, no dither."""
    from transformers.audio_utils import spectrogram

    window, mel = _fbank_tables(sample_rate, num_mel_bins)
    spec = spectrogram(
        samples.astype(np.float64),
        window,
        frame_length=400,
        hop_length=160,
        fft_length=512,
        power=2.0,
        center=False,
        preemphasis=0.97,
        mel_filters=mel,
        mel_floor=KALDI_EPS,
        log_mel="log",
        remove_dc_offset=True,
    )
    return spec.T.astype(np.float32)


def audio_to_input(waveform: torch.Tensor, sample_rate: int, spec: AudioSpec, path: str = "<audio>") -> torch.Tensor:
    """Turns a [channels, n] waveform at ``sample_rate`` into the tower's [clips, 1, mel, frames]."""
    # Own copy: the in-place mean removal below must not write into the caller's tensor.
    waveform = resample(waveform.to(torch.float32), sample_rate, spec.sample_rate).clone()
    n = waveform.shape[1]
    if n < 400:
        raise MediaError(path, f"audio too short ({n / spec.sample_rate * 1000:.1f} ms; need at least 25 ms)")
    clips = []
    for start, end in clip_timepoints(n / spec.sample_rate, spec.clip_duration, spec.clips):
        clip = waveform[:, int(start * spec.sample_rate) : int(end * spec.sample_rate)]
        clip -= clip.mean()  # in place on a view: upstream's inter-clip leak, kept on purpose
        fb = torch.from_numpy(kaldi_fbank(clip[0].numpy(), spec.sample_rate, spec.num_mel_bins)).T
        pad = spec.target_length - fb.shape[1]
        fb = torch.nn.functional.pad(fb, (0, pad)) if pad > 0 else fb[:, : spec.target_length]
        clips.append(((fb - spec.mean) / spec.std)[None])
    return torch.stack(clips)


def load_audio(path: str | Path, spec: AudioSpec = AudioSpec()) -> torch.Tensor:
    samples, sr = decode_audio(path)
    return audio_to_input(torch.from_numpy(samples), sr, spec, str(path))
