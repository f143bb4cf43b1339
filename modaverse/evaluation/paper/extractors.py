"""Files -> the features that FID, FD, IS and CLIPSIM are computed from.

Three networks, each built once from ``config.eval`` and run in batches:

- the FID Inception-v3 (:mod:`.inception`) on images and on frames sampled evenly from
  videos: pool3 features for FID, unbiased logits for the Inception Score;
- PANNs Cnn14 at 16 kHz (:mod:`.panns`) on audio cut or padded to ``audio_seconds``:
  embeddings for FD, logits for IS, as AudioLDM's evaluation computes them;
- CLIP (transformers' ``CLIPModel``) on video frames and captions, for CLIPSIM.

Weight files come from the config. A missing one is downloaded from its URL when online;
offline the error names the file and the URL. ``null`` weights build a seeded random
network (tests, tiny profile); :attr:`Extractors.notes` then says the numbers are not
comparable with published ones.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from modaverse.config import EvalConfig
from modaverse.core.errors import MediaError, ModaverseError, WeightsError, key_mismatch

RANDOM_NOTE = "{what}: random weights (eval.{key}: null), so these numbers only compare runs of this profile"


def _progress(items: Sequence, desc: str, batch: int, show: bool | None):
    from tqdm.auto import tqdm

    return tqdm(range(0, len(items), batch), desc=desc, unit="batch", disable=None if show is None else not show,
                file=sys.stderr, leave=False)


def _load_network(build: Callable[[], torch.nn.Module], weights: str | None, url: str | None, seed: int,
                  what: str, skip: tuple[str, ...] = ()) -> torch.nn.Module:
    """Strictly loads a published weight file (downloaded when missing and online), or seeds a random init."""
    from modaverse.encoder.imagebind.checkpoint import read_state_dict, resolve_weights

    torch.manual_seed(seed)
    net = build()
    if weights is None:
        return _variance_preserving(net).eval().requires_grad_(False)
    try:
        path = resolve_weights(weights, url)
    except WeightsError as e:
        raise WeightsError(f"{what} weights: {e}" + ("" if url is None or url in str(e) else f"; get it from {url}")) from None
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(skip)}
    parts = key_mismatch(net.state_dict(), state)
    if parts:
        raise WeightsError(f"{path}: not {what} weights; " + "; ".join(parts))
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


def _variance_preserving(net: torch.nn.Module) -> torch.nn.Module:
    """He-normal weights, zero biases: PyTorch's default init shrinks activations layer by layer, and
    through Inception's ~50 layers random features collapse to ~1e-8, which makes every FID 0."""
    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    return net


def read_image(path: str | Path) -> torch.Tensor:
    """``[3, H, W]`` uint8 RGB."""
    from modaverse.media.image import open_image

    arr = np.asarray(open_image(path).convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def read_frames(path: str | Path, count: int) -> torch.Tensor:
    """``count`` frames spread evenly over the video (first to last), ``[count, 3, H, W]`` uint8."""
    import av

    from modaverse.media.sniff import decoding

    with decoding(path, "video"), av.open(str(path)) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream found")
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    if not frames:
        raise MediaError(path, "the video has no frames")
    pick = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return torch.from_numpy(np.stack([frames[i] for i in pick])).permute(0, 3, 1, 2)


def read_audio(path: str | Path, sample_rate: int, seconds: float) -> torch.Tensor:
    """Mono waveform at ``sample_rate``, cut or zero-padded to ``seconds``."""
    from modaverse.media.audio import decode_audio, resample

    samples, sr = decode_audio(path)
    wave = resample(torch.from_numpy(samples).mean(0), sr, sample_rate)
    n = int(round(seconds * sample_rate))
    return torch.nn.functional.pad(wave[:n], (0, max(0, n - wave.shape[0])))


class Extractors:
    """The evaluation networks of one config, built on first use."""

    def __init__(self, config: EvalConfig, progress: bool | None = None):
        from modaverse.core.device import pick_device

        self.config, self.progress = config, progress
        self.device = pick_device(config.device)
        self.notes: list[str] = []

    def _note(self, what: str, key: str) -> None:
        note = RANDOM_NOTE.format(what=what, key=key)
        if note not in self.notes:
            self.notes.append(note)

    @cached_property
    def inception(self):
        from modaverse.evaluation.paper.inception import FIDInception

        c = self.config
        if c.inception_weights is None:
            self._note("FID Inception", "inception_weights")
        return _load_network(FIDInception, c.inception_weights, c.inception_url, c.seed,
                             "FID Inception-v3").to(self.device)

    @cached_property
    def panns(self):
        from modaverse.evaluation.paper.panns import FRONT_END_KEYS, Cnn14, Cnn14Spec

        c = self.config
        if c.panns_weights is None:
            self._note("PANNs Cnn14", "panns_weights")
        elif c.panns_width != 64:
            raise ModaverseError(f"eval.panns_width {c.panns_width}: the published Cnn14 weights need 64")
        net = _load_network(lambda: Cnn14(Cnn14Spec(width=c.panns_width)), c.panns_weights, c.panns_url, c.seed,
                            "PANNs Cnn14 (16 kHz)", FRONT_END_KEYS)
        if c.panns_weights is None:  # trained bn0 statistics standardise log-mel dB; give random ones rough ones
            net.bn0.running_mean.fill_(-40.0)
            net.bn0.running_var.fill_(20.0**2)
        return net.to(self.device)

    @cached_property
    def clip(self):
        """(CLIPModel, tokenizer)."""
        from transformers import AutoTokenizer, CLIPModel

        name = self.config.clip_model
        if name is None:
            self._note("CLIP", "clip_model")
            return _tiny_clip(self.config.seed)
        try:
            model, tok = CLIPModel.from_pretrained(name), AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as e:
            raise WeightsError(f"eval.clip_model {name}: cannot load CLIP ({str(e).splitlines()[0]}); download it "
                               "(e.g. `hf download openai/clip-vit-base-patch32`) and point eval.clip_model at "
                               "its folder") from None
        if len(tok) == 0:
            raise WeightsError(f"eval.clip_model {name}: the tokenizer came back empty")
        return model.to(self.device).eval(), tok

    # -- features --------------------------------------------------------------------------------
    def _batched(self, items: Sequence, read: Callable, run: Callable, desc: str) -> list[torch.Tensor]:
        """Runs ``run`` on stacked ``read(item)`` batches; items of other shapes go in their own stack."""
        outs: list[list[torch.Tensor]] = []
        size = self.config.batch_size
        for start in _progress(items, desc, size, self.progress):
            loaded = [read(x) for x in items[start : start + size]]
            results: list = [None] * len(loaded)
            for shape in dict.fromkeys(t.shape for t in loaded):
                idx = [i for i, t in enumerate(loaded) if t.shape == shape]
                with torch.inference_mode():
                    got = run(torch.stack([loaded[i] for i in idx]).to(self.device))
                for j, i in enumerate(idx):
                    results[i] = [g[j].float().cpu() for g in got]
            outs += results
        return [torch.stack([r[k] for r in outs]) for k in range(len(outs[0]))] if outs else []

    def images(self, paths: Sequence[str | Path]) -> tuple[torch.Tensor, torch.Tensor]:
        """(pool3 ``[N, 2048]``, logits ``[N, 1008]``)."""
        net = self.inception
        return tuple(self._batched(list(paths), read_image, net, "inception"))

    def video_frames(self, paths: Sequence[str | Path]) -> list[torch.Tensor]:
        """Each video's evenly sampled frames, ``[frames, 3, H, W]`` uint8, in order."""
        return [read_frames(p, self.config.video_frames) for p in paths]

    def frames(self, frames: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inception features of every frame of every video (FID over frames, as video papers report it)."""
        flat = [f for video in frames for f in video]
        net = self.inception
        return tuple(self._batched(flat, lambda t: t, net, "inception"))

    def audio(self, paths: Sequence[str | Path]) -> tuple[torch.Tensor, torch.Tensor]:
        """(Cnn14 embeddings ``[N, 2048]``, logits ``[N, 527]``)."""
        net = self.panns
        rate, seconds = net.spec.sample_rate, self.config.audio_seconds
        return tuple(self._batched(list(paths), lambda p: read_audio(p, rate, seconds), net, "panns"))

    def clip_similarity(self, frames: Sequence[torch.Tensor], captions: Sequence[str]) -> torch.Tensor:
        """Per video: the mean cosine similarity of its frames to its caption (CLIPSIM before averaging)."""
        from PIL import Image

        from modaverse.media.image import normalize, pil_to_tensor, resize_center_crop

        model, tok = self.clip
        size = model.config.vision_config.image_size
        out = []
        for video, caption in zip(frames, captions, strict=True):
            pixels = torch.stack([normalize(pil_to_tensor(resize_center_crop(
                Image.fromarray(f.permute(1, 2, 0).numpy()), size))) for f in video]).to(self.device)
            text = tok([caption], padding=True, truncation=True, max_length=model.config.text_config.max_position_embeddings,
                       return_tensors="pt").to(self.device)
            with torch.inference_mode():
                img = _unit(model.get_image_features(pixel_values=pixels))
                txt = _unit(model.get_text_features(**text))
            out.append((img @ txt.T).mean().float().cpu())
        return torch.stack(out) if out else torch.empty(0)


def _unit(x) -> torch.Tensor:
    x = x if isinstance(x, torch.Tensor) else x.pooler_output  # transformers 5 may return an output object
    return x / x.norm(dim=-1, keepdim=True)


def _tiny_clip(seed: int):
    from transformers import CLIPConfig, CLIPModel

    from model_zoo.tiny import tokenizer

    tok = tokenizer()
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_attention_heads=4,
                         num_hidden_layers=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    return CLIPModel(config).eval(), tok
