"""YAML configs validated into pydantic models, with ``--set a.b=c`` overrides.

A config names every component (encoder, adaptors, LLM, zoo) the way torchtune recipes
do; unknown keys and wrong types are errors that name the file and the dotted key, so a
typo never silently falls back to a default. Configs shipped with the package
(``configs/*.yaml``) are addressed by name (``--config tiny``); any other value is a path.
Relative paths inside a YAML file are resolved against that file's folder, never the
working directory.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationError, field_validator

from modaverse.core.errors import ConfigError
from modaverse.core.modality import MODALITIES, Modality
from modaverse.core.strict import Settings, Strict, reason

DType = Literal["float32", "float16", "bfloat16"]


def check_device(value: str) -> str:
    """Device strings are checked where they are read, not when torch first trips on them."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ValueError(f"unknown device {value!r}; use auto, cpu, cuda, cuda:N or mps")
    return value


Device = Annotated[str, AfterValidator(check_device)]


def arch_file(name: str):
    """The JSON of a named ImageBind architecture (``configs/imagebind/``): architectures are data."""
    return resources.files("modaverse.configs") / "imagebind" / f"{name}.json"


def list_archs() -> list[str]:
    root = resources.files("modaverse.configs") / "imagebind"
    return sorted(p.name.removesuffix(".json") for p in root.iterdir() if p.name.endswith(".json"))


#: Largest image decoded by default (width x height): Pillow's own bomb limit is ~179 MP.
MAX_PIXELS = 50_000_000


class AudioSpec(Strict):
    """Filterbank settings; the defaults are ImageBind's."""

    sample_rate: int = Field(16000, description="audio is resampled to this rate (Hz)")
    num_mel_bins: int = Field(128, description="Kaldi filterbank bins")
    target_length: int = Field(204, description="frames per clip after zero-padding/cropping")
    clip_duration: float = Field(2.0, description="seconds per clip")
    clips: int = Field(3, description="clips per file, spread from start to end")
    mean: float = Field(-4.268, description="filterbank normalisation mean")
    std: float = Field(9.138, description="filterbank normalisation std")


class VideoSpec(Strict):
    """Clip sampling settings; the defaults are ImageBind's."""

    clip_duration: float = Field(2.0, description="seconds per clip")
    clips: int = Field(5, description="clips per file, spread from start to end")
    frames_per_clip: int = Field(2, description="frames kept per clip (uniform subsampling)")
    size: int = Field(224, description="side of the square crops")
    crops: int = Field(3, description="spatial crops per clip along the longer side")


class MediaConfig(Strict):
    """Preprocessing settings (``media:`` in a config); defaults reproduce ImageBind."""

    image_size: int = Field(224, description="side of the square crop for images, depth and thermal")
    audio: AudioSpec = AudioSpec()
    video: VideoSpec = VideoSpec()
    depth_scale: float = Field(0.001, description="16-bit depth PNG units -> metres (0.001 for millimetres)")
    max_pixels: int = Field(MAX_PIXELS, ge=1, description="largest image (width x height) decoded; bigger ones "
                            "are refused from their header, before any decoding")


class EncoderConfig(Settings):
    """The ImageBind encoder (``encoder:``)."""

    arch: str = Field("imagebind_huge", description="named architecture; see `modaverse archs`")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="overrides of upstream ImageBindModel kwargs")
    modalities: list[Modality] = Field(default_factory=lambda: list(MODALITIES), description="towers to build")
    weights: str | None = Field(None, description="local .pth/.safetensors, or a URL; null = random init from seed")
    weights_url: str | None = Field(None, description="downloaded to `weights` when that file is missing")
    sha256: str | None = Field(None, description="expected sha256 of the weights file")
    seed: int = Field(0, description="seed for random init when no weights are given")
    device: Device = Field("auto", description="cpu, cuda, cuda:N, mps or auto")
    dtype: DType = Field("float32", description="compute dtype of the encoder")
    batch_size: int = Field(8, ge=1, description="files per forward pass")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        if v not in list_archs():
            raise ValueError(f"unknown architecture {v!r}; known: {', '.join(list_archs())}")
        return v



class AdaptorConfig(Settings):
    """Projection of ImageBind embeddings into the LLM (``adaptor:``)."""

    projector: str = Field("linear", description="linear, or mlpNx_gelu (LLaVA-style config string)")
    shared: bool = Field(False, description="one projection for all modalities (PandaGPT / official ModaVerse)")
    tokens_per_input: int = Field(1, ge=1, description="soft tokens each input becomes")
    standardize: bool = Field(
        False, description="standardise features per modality with statistics fitted on the training set")

    @field_validator("projector")
    @classmethod
    def _known_projector(cls, v: str) -> str:
        if not re.fullmatch(r"linear|mlp[1-9]\d*x_gelu", v):
            raise ValueError(f"unknown projector {v!r}; use 'linear' or 'mlp<N>x_gelu' (e.g. mlp2x_gelu)")
        return v


class LoraConfig(Settings):
    r: int = Field(32, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the LoRA branch")
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
                               description="module names that get LoRA adapters")


class LLMConfig(Settings):
    """The language model (``llm:``); either a checkpoint or an architecture built from config."""

    model: str | None = Field(
        None, description="hub id, local folder, .gguf file (converted once, cached) or pkg:DIST/PATH (a file an "
        "installed package ships); wins over arch")
    arch: dict[str, Any] | None = Field(None, description="LlamaConfig kwargs, to build a random model (tiny profile)")
    seed: int = Field(0, description="seed for building `arch` with random weights")
    dtype: DType = Field("float32", description="dtype the LLM is loaded in")
    device: Device = Field("auto", description="cpu, cuda, cuda:N, mps or auto")
    lora: LoraConfig = Field(default_factory=LoraConfig)


class PromptConfig(Settings):
    """How conversations become token sequences (``prompt:``)."""

    template: Literal["auto", "vicuna"] = Field(
        "auto", description="auto = the tokenizer's chat template, or Vicuna's ### Human/### Assistant without one")
    system: str | None = Field(None, description="system prompt; null = a built-in one naming the capabilities")
    compose: Literal["inline", "sum"] = Field(
        "inline", description="inline = each input at its own place; sum = PandaGPT's one summed token per turn")
    max_context: int | None = Field(None, ge=32, description="token budget of a request; null = the model's maximum")


#: The smallest decoding budget: room for a short reply after the grammar's wrap-up phase.
MIN_NEW_TOKENS = 96


class GenerationConfig(Settings):
    """Decoding settings (``generation:``)."""

    constrained: bool = Field(True, description="decode under the meta-response grammar (always valid JSON)")
    max_new_tokens: int = Field(512, description=f"cap on generated tokens, at least {MIN_NEW_TOKENS} (the grammar "
                                "closes the JSON in time)")
    temperature: float = Field(0.0, ge=0, le=5, description="0 = greedy; above 0 samples")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass (when sampling)")
    seed: int | None = Field(None, description="sampling seed; null = the config's global seed")

    @field_validator("max_new_tokens")
    @classmethod
    def _room_for_a_reply(cls, v: int) -> int:
        if v < MIN_NEW_TOKENS:
            raise ValueError(f"{v} is below {MIN_NEW_TOKENS}, the least that leaves room for a reply and for "
                             "closing its JSON")
        return v


class GeneratorConfig(Settings):
    """One zoo entry (``zoo.<capability>:``)."""

    plugin: str = Field(description="registered plug-in name; see `modaverse zoo list`")
    model: str | None = Field(None, description="hub id or local folder (from_pretrained); null for plug-ins built "
                              "from config (the tiny-* ones)")
    seed: int = Field(0, description="seed of plug-ins built from config with random weights (tiny-*)")
    dtype: DType = Field("float16", description="dtype the generator is loaded in")
    device: Device = Field("auto", description="cpu, cuda, cuda:N, mps or auto")
    offload: Literal["none", "model", "sequential"] = Field(
        "none", description="diffusers CPU offload: model (whole sub-models) or sequential (layer by layer)")
    scheduler: str | None = Field(None, description="diffusers scheduler class to swap in")
    defaults: dict[str, Any] = Field(default_factory=dict, description="default render parameters (bounded)")


class RenderConfig(Settings):
    """How the zoo keeps generators in memory (``render:``)."""

    max_resident: int = Field(1, ge=1, description="generators kept loaded at once (least recently used leaves)")
    memory_budget_gb: float | None = Field(None, gt=0, description="unload least recently used generators above this")


class TrainableConfig(Settings):
    """Which parts learn (``trainable:``), torchtune-style; the same choice shapes inference.

    The set of trainable tensors is exactly what a checkpoint holds, so a config whose
    ``trainable`` differs from the run's cannot load that run's checkpoint.
    """

    adaptor: Literal["full", "frozen"] = Field("full", description="the per-modality projections")
    llm: Literal["lora", "full", "frozen"] = Field(
        "lora", description="lora = LoRA adapters (llm.lora); full = every LLM weight; frozen = none")
    markers: bool = Field(True, description="train the embedding rows of the added marker tokens (lora/frozen)")


class TrainConfig(Settings):
    """One-stage training of adaptors + LoRA (``train:``); see docs/training.md."""

    data: str | None = Field(None, description="training JSONL (docs/data.md); relative to this file")
    eval_data: str | None = Field(None, description="held-out JSONL scored by `modaverse eval invocations` at the end")
    eval_limit: int | None = Field(
        20, ge=1, description="records of eval_data scored at the end (null = all; the full score: "
        "modaverse eval invocations --data FILE --checkpoint RUN)")
    max_examples: int | None = Field(
        None, ge=1, description="train on this many conversations (a seeded sample); max_steps alone also "
        "bounds it to what the steps use, so only their files are encoded")
    output_dir: str = Field("runs/train", description="checkpoints and logs; relative to the working directory")
    feature_cache: str | None = Field(
        None, description="ImageBind feature cache folder; null = $XDG_CACHE_HOME/modaverse/features")
    epochs: float = Field(1.0, gt=0, description="passes over the data (ignored when max_steps is set)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps in total; null = from epochs")
    batch_size: int = Field(8, ge=1, description="conversations per device per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(5e-4, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of steps with a linear warm-up")
    schedule: Literal["linear", "cosine", "constant"] = Field("cosine", description="decay after warm-up")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping; null = off")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="autocast precision (accelerate)")
    save_every: int | None = Field(None, ge=1, description="checkpoint every N steps (plus one at the end)")
    keep_last: int = Field(2, ge=1, description="step checkpoints kept on disk")
    log_every: int = Field(10, ge=1, description="steps between logged metrics")
    log_with: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="experiment trackers (install modaverse[tracking])")
    max_length: int | None = Field(None, ge=32, description="token cap per conversation; null = prompt.max_context")
    seed: int | None = Field(None, description="data order and init seed; null = the global seed")
    allow_full_finetune: bool = Field(
        False, description="let trainable.llm: full train every weight of a pretrained llm.model (off: a profile "
        "made for a tiny model never fine-tunes a real one whole by inheritance)")


EVAL_CACHE = "~/.cache/modaverse/eval"


class EvalConfig(Settings):
    """``modaverse eval``: feature extractors and benchmark settings (docs/evaluation.md).

    The weight files are the ones published numbers were computed with; a missing file is
    downloaded from its ``*_url`` when online, else named in a one-line error. ``null``
    weights build the network with seeded random weights: only for tests and the tiny
    profile, and the results say so.
    """

    device: Device = Field("auto", description="device of the feature extractors")
    batch_size: int = Field(16, ge=1, description="files per forward pass of a feature extractor")
    seed: int = Field(0, description="seed of random feature extractors and of the Inception Score's split order")
    inception_weights: str | None = Field(
        f"{EVAL_CACHE}/weights-inception-2015-12-05-6726825d.pth",
        description="FID Inception-v3 (torch-fidelity / pytorch-fid file); null = random (tests only)")
    inception_url: str | None = Field(
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
        description="where inception_weights is downloaded from when missing")
    panns_weights: str | None = Field(
        f"{EVAL_CACHE}/Cnn14_16k_mAP=0.438.pth", description="PANNs Cnn14 at 16 kHz (AudioLDM's FD/IS); null = random")
    panns_url: str | None = Field("https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth",
                                  description="where panns_weights is downloaded from when missing")
    panns_width: int = Field(64, ge=1, description="Cnn14 channels of the first block (64; smaller only when random)")
    clip_model: str | None = Field(
        "openai/clip-vit-base-patch32", description="CLIP for CLIPSIM: hub id or local folder; null = tiny random")
    video_frames: int = Field(16, ge=1, description="frames sampled evenly from each video for FID and CLIPSIM")
    audio_seconds: float = Field(10.0, gt=0, description="audio is cut or zero-padded to this length for FD/IS")
    instructions: dict[str, str] = Field(
        default_factory=dict,
        description="request per benchmark, replacing its default one (`modaverse eval list` shows them): "
        "<media> marks the input of a captioning benchmark, {caption} the caption of a generation one")


class Config(Settings):
    base: str | None = Field(
        None, description="config this one extends (name or path); its keys apply unless set here")
    name: str = Field("custom", description="profile name, shown in outputs")
    seed: int = Field(0, description="global seed")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    adaptor: AdaptorConfig = Field(default_factory=AdaptorConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    render: RenderConfig = Field(default_factory=RenderConfig)
    trainable: TrainableConfig = Field(default_factory=TrainableConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: str | None = Field(
        None, description="trained weights (a `modaverse train` run or step folder); null = untrained")
    zoo: dict[str, GeneratorConfig] = Field(
        default_factory=dict, description="capability -> generator; or a preset name from configs/zoo/ or a YAML path")


#: The settings that decide what a checkpoint's tensors are and mean. A checkpoint stores them
#: (``manifest.json``: ``config``), so ``--checkpoint RUN`` rebuilds its model with nothing
#: repeated by hand; a section listed as ``None`` is stored whole. Devices, dtypes and batch
#: sizes are left to the user's config.
SHAPING: dict[str, set[str] | None] = {
    "encoder": {"arch", "kwargs", "modalities", "weights", "weights_url", "sha256", "seed"},
    "adaptor": None,
    "llm": {"model", "arch", "seed", "lora"},
    "prompt": None,
    "trainable": None,
}


def shaping(config: Config) -> dict:
    """The model-shaping sections of ``config`` (see :data:`SHAPING`), as plain JSON."""
    return {section: getattr(config, section).model_dump(mode="json", include=keys)
            for section, keys in SHAPING.items()}


#: Dotted keys holding file paths, resolved against the YAML file's folder.
PATH_KEYS = ("encoder.weights", "llm.model", "checkpoint", "train.data", "train.eval_data", "train.feature_cache",
             "eval.inception_weights", "eval.panns_weights", "eval.clip_model")


def config_summary(name: str) -> str:
    """The first line of a packaged config's leading comment: what the profile is for."""
    text = (resources.files("modaverse.configs") / f"{name}.yaml").read_text()
    first = next((line for line in text.splitlines() if line.strip()), "")
    return first.lstrip("# ").rstrip(":").strip() if first.startswith("#") else ""


def list_configs() -> list[str]:
    root = resources.files("modaverse.configs")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def _locate(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if isinstance(name_or_path, str) and "/" not in name_or_path and not path.suffix:
        packaged = resources.files("modaverse.configs") / f"{name_or_path}.yaml"
        if packaged.is_file():
            return Path(str(packaged))
    raise ConfigError(f"{name_or_path}: no such config file or packaged config (packaged: {', '.join(list_configs())})")


def list_zoo_presets() -> list[str]:
    root = resources.files("modaverse.configs") / "zoo"
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_mapping(path: Path, what: str) -> dict:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {what}")
    return raw


def _expand_zoo(raw: dict, base: Path, origin: str) -> None:
    """``zoo: NAME`` (a packaged preset in configs/zoo/) or ``zoo: path.yaml`` becomes that mapping."""
    name = raw.get("zoo")
    if not isinstance(name, str):
        return
    path = (base / name).expanduser()
    if not (name.endswith((".yaml", ".yml")) and path.is_file()):
        packaged = resources.files("modaverse.configs") / "zoo" / f"{name}.yaml"
        if "/" in name or not packaged.is_file():
            raise ConfigError(f"{origin}: zoo: {name!r} is neither a zoo preset ({', '.join(list_zoo_presets())}) "
                              "nor a YAML file")
        path = Path(str(packaged))
    preset = _read_mapping(path, "a zoo preset maps capabilities to generators")
    for entry in preset.values():  # local model folders in a preset resolve against the preset's folder
        if isinstance(entry, dict) and isinstance(entry.get("model"), str) and entry["model"].startswith("."):
            entry["model"] = str((path.parent / entry["model"]).resolve())
    raw["zoo"] = preset


def _resolve_paths(raw: dict, base: Path) -> None:
    for key in PATH_KEYS:
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get(leaf), str):
            continue
        value = node[leaf]
        if "://" in value or value.startswith("~"):
            node[leaf] = os.path.expanduser(value)
            continue
        if value.startswith((".", "/")) or (base / value).exists():
            node[leaf] = str((base / value).resolve())


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. encoder.device=cpu")
    key, _, value = item.partition("=")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def _apply(raw: dict, keys: list[str], value: Any, item: str) -> None:
    node = raw
    for depth, k in enumerate(keys[:-1]):
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {item}: {'.'.join(keys[: depth + 1])} is not a section")
        node = nxt
    node[keys[-1]] = value


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_layered(path: Path, seen: tuple[Path, ...]) -> dict:
    """A config file with its ``base:`` chain merged under it; each file's paths resolved against its folder."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: base: configs extend each other in a loop")
    raw = _read_mapping(path, "top level must be a mapping of sections")
    _resolve_paths(raw, path.parent)
    _expand_zoo(raw, path.parent, str(path))
    base = raw.get("base")
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a config name or path")
    local = path.parent / base
    parent = _read_layered(local if local.is_file() else _locate(base), (*seen, path.resolve()))
    return _merge(parent, raw)


def load_config(name_or_path: str | os.PathLike = "tiny", overrides: list[str] = (), *,
                checkpoint: str | os.PathLike | None = None, shaped: dict | None = None) -> Config:
    """Reads a YAML config (name or path), applies ``KEY=VALUE`` overrides, validates.

    With ``checkpoint``, the model-shaping settings that checkpoint was trained with
    (``shaped``, read from its manifest) replace the config's, and the checkpoint becomes the
    config's; explicit overrides still come last and win.
    """
    path = _locate(name_or_path)
    raw = _read_layered(path, ())
    if checkpoint is not None:
        for section, values in (shaped or {}).items():
            if section in SHAPING and isinstance(values, dict):
                raw[section] = {**(raw.get(section) or {}), **values}
        raw["checkpoint"] = str(checkpoint)
    try:
        Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {reason(e)}") from None
    for item in overrides:
        keys, value = parse_override(item)
        _apply(raw, keys, value, item)
        _expand_zoo(raw, Path.cwd(), f"--set {item}")
        try:
            Config.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(f"--set {item}: {reason(e)}") from None
    return Config.model_validate(raw)
