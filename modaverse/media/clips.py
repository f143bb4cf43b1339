"""Where ImageBind's fixed-count clips start and end inside a file.

Upstream uses pytorchvideo's ``ConstantClipsPerVideoSampler`` at the commit it pins
(6cdc929): clip k starts at k * max(duration - clip, 0) / max(n - 1, 1), so the first clip
starts at 0 and the last ends at the file's end. The arithmetic is done with exact
fractions of the float duration, as upstream does; PyPI's pytorchvideo 0.1.5 divides by
n instead and would place the clips differently.
"""

from __future__ import annotations

from fractions import Fraction


def clip_timepoints(duration: float, clip_duration: float, num_clips: int) -> list[tuple[Fraction, Fraction]]:
    spare = Fraction(max(duration - clip_duration, 0))
    step = spare / max(num_clips - 1, 1)
    length = Fraction(clip_duration)
    return [(step * k, step * k + length) for k in range(num_clips)]
