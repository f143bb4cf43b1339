"""Text-to-video with ModelScope/VideoFusion (``TextToVideoSDPipeline``); zeroscope works too.

Official ModaVerse settings: DPMSolverMultistep, 25 steps, 16 frames, guidance 9, 256x256,
10 fps. Videos are written as H.264 MP4 (or VP9 WebM with ``format: webm``).
"""

from __future__ import annotations

from pathlib import Path

from modaverse.media.writers import write_video
from model_zoo.base import COMMON_OPTIONS, DiffusersGenerator


class TextToVideoMS(DiffusersGenerator):
    name = "text-to-video-ms"
    pipeline = "TextToVideoSDPipeline"
    options = COMMON_OPTIONS | {"width", "height", "frames", "fps", "format"}

    def _from_pretrained(self, dtype):
        import model_zoo.video_unet  # noqa: F401  diffusers loads a folder's custom UNet class only once imported

        return super()._from_pretrained(dtype)

    def render(self, prompt, params, out_dir: Path, inputs=()) -> list[Path]:
        kwargs = self.common_kwargs(params)
        if "frames" in params:
            kwargs["num_frames"] = params["frames"]
        frames = self.pipe(prompt=prompt, output_type="np", **kwargs).frames[0]
        return [write_video(frames, out_dir, "video", fps=params.get("fps", 8), fmt=params.get("format", "mp4"))]
