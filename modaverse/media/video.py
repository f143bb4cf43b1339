"""Videos -> ImageBind's [clips x crops, 3, frames, 224, 224] input, decoded by PyAV.

Follows upstream's loader step for step: clips placed by :func:`clip_timepoints` on the
stream's frame count / average fps (what decord reports), frames ``[ceil(fps*start),
ceil(fps*end))``, two frames kept per clip by uniform subsampling, /255, shorter side to
224 by bilinear interpolation without antialiasing, CLIP normalisation, and three crops
along the longer side. Only the frames a clip needs are converted to RGB, so long videos
do not have to fit in memory.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from modaverse.config import VideoSpec
from modaverse.core.errors import MediaError
from modaverse.media.clips import clip_timepoints
from modaverse.media.image import normalize
from modaverse.media.sniff import check_complete, declared_seconds, decoding


def select_frames(num_frames: int, fps: float, spec: VideoSpec) -> list[list[int]]:
    """Stream indices of the frames each clip keeps."""
    out = []
    for start, end in clip_timepoints(num_frames / fps, spec.clip_duration, spec.clips):
        first = math.ceil(fps * start)
        last = min(math.ceil(fps * end), num_frames)
        n = last - first
        if n <= 0:
            raise ValueError(f"clip [{float(start):.3f}, {float(end):.3f}] s holds no frame")
        keep = torch.linspace(0, n - 1, spec.frames_per_clip).clamp(0, n - 1).long()
        out.append([first + int(i) for i in keep])
    return out


def decode_frames(path: str | Path, spec: VideoSpec) -> tuple[np.ndarray, list[list[int]]]:
    """Returns the kept RGB frames [clips, frames, H, W, 3] uint8 and their stream indices."""
    import av

    with decoding(path, "video"), av.open(str(path)) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream found")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        num_frames = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        if num_frames <= 0 or fps <= 0:
            raise MediaError(path, "video stream reports no frames or no frame rate")
        check_complete(path, declared_seconds(container, stream), num_frames / fps)
        indices = select_frames(num_frames, fps, spec)
        wanted = {i for clip in indices for i in clip}
        container.seek(0)
        kept: dict[int, np.ndarray] = {}
        decoded = 0
        for i, frame in enumerate(container.decode(stream)):
            decoded = i + 1
            if i in wanted:
                kept[i] = frame.to_ndarray(format="rgb24")
            if len(kept) == len(wanted):
                break
    if len(kept) < len(wanted):
        raise MediaError(
            path, f"only {decoded} of {num_frames} frames could be decoded (truncated file?)"
        )
    return np.stack([np.stack([kept[i] for i in clip]) for clip in indices]), indices


def frames_to_input(frames: np.ndarray, spec: VideoSpec) -> torch.Tensor:
    """[clips, T, H, W, 3] uint8 -> [clips x crops, 3, T, size, size] float."""
    views = []
    for clip in frames:
        x = torch.from_numpy(clip).permute(3, 0, 1, 2).float() / 255.0  # C T H W
        h, w = x.shape[-2:]
        if w < h:
            size = (int(math.floor(h / w * spec.size)), spec.size)
        else:
            size = (spec.size, int(math.floor(w / h * spec.size)))
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = normalize(x)
        views.extend(_spatial_crops(x, spec.size, spec.crops))
    return torch.stack(views)


def _spatial_crops(x: torch.Tensor, size: int, num: int) -> list[torch.Tensor]:
    h, w = x.shape[-2:]
    crops = []
    for idx in range(num) if num > 1 else (1,):
        y0, x0 = math.ceil((h - size) / 2), math.ceil((w - size) / 2)
        if idx != 1:
            if h > w:
                y0 = 0 if idx == 0 else h - size
            else:
                x0 = 0 if idx == 0 else w - size
        crops.append(x[..., y0 : y0 + size, x0 : x0 + size])
    return crops


def load_video(path: str | Path, spec: VideoSpec = VideoSpec()) -> torch.Tensor:
    frames, _ = decode_frames(path, spec)
    return frames_to_input(frames, spec)
