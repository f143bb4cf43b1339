"""YAML configs validated into pydantic models, with ``--set a.b=c`` overrides.

A config names every component (encoder, adaptors, LLM, zoo) the way torchtune recipes
do; unknown keys and wrong types are errors that name the file and the dotted key, so a
typo never silently falls back to a default. Configs shipped with the package
(``configs/*.yaml``) are addressed by name (``--config tiny``); any other value is a path.
Relative paths inside a YAML file are resolved against that file's folder, never the
working directory.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from modaverse.core.errors import ConfigError
from modaverse.core.modality import MODALITIES, Modality
from modaverse.core.strict import Settings, Strict

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
    tower_weights: str | dict[str, str] | None = Field(
        None, description="towers loaded over `weights` (`modaverse bind` output): a folder of <tower>.safetensors "
        "files, or a mapping tower: file")
    text_tokenizer: str | None = Field(
        None, description="tokenizers JSON for the text tower (CLIP's BPE for imagebind_huge); null = the one a "
        "bound text tower carries")
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

    projector: str = Field("linear", description="linear, mlpNx_gelu (LLaVA-style config string, every layer "
                           "tokens x hidden wide) or mlpNx_gelu_tokenwise (only the first layer that wide, the rest "
                           "shared by each token)")
    shared: bool = Field(False, description="one projection for all modalities (PandaGPT / official ModaVerse)")
    tokens_per_input: int = Field(1, ge=1, description="soft tokens each input becomes")
    standardize: bool = Field(
        False, description="standardise features per modality with statistics fitted on the training set")

    @field_validator("projector")
    @classmethod
    def _known_projector(cls, v: str) -> str:
        if not re.fullmatch(r"linear|mlp[1-9]\d*x_gelu(_tokenwise)?", v):
            raise ValueError(f"unknown projector {v!r}; use 'linear', 'mlp<N>x_gelu' (e.g. mlp2x_gelu) or "
                             "'mlp<N>x_gelu_tokenwise'")
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
#: The most tokens one request may ask for.
MAX_NEW_TOKENS = 8192


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


class BindConfig(Settings):
    """``modaverse bind``: ImageBind's own recipe for the encoder (``bind:``; docs/imagebind.md).

    Two stages, each run only for the towers asked for: vision and text trained together on
    captioned images and videos (CLIP's symmetric InfoNCE; skipped over pretrained weights, whose
    vision and text towers stay frozen as upstream's), then every other tower bound to the
    *frozen* embeddings of its paired image or video, never to text.
    """

    pairs: str | None = Field(None, description="media.jsonl-style file: captioned images/videos and `pair`ed "
                              "views (`modaverse data synth` writes one); relative to this file")
    towers: list[Literal["vision", "text", "audio", "depth", "thermal", "imu"]] = Field(
        default_factory=lambda: ["vision", "text", "audio", "depth", "thermal", "imu"],
        description="towers to train (vision and text together, then each other tower against frozen vision)")
    output_dir: str = Field("runs/bind", description="checkpoints and one <tower>.safetensors per tower in final/")
    vision_text_steps: int = Field(3000, ge=1, description="optimizer steps of the vision-text stage")
    bind_steps: int = Field(3000, ge=1, description="optimizer steps of the binding stage (all its towers each step)")
    batch_size: int = Field(64, ge=2, description="pairs per tower per step (in-batch negatives)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay of matrices")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of each stage's steps warming up, then cosine")
    augment: bool = Field(True, description="label-keeping augmentations of the trained side (crops that keep "
                          "objects, zoom, flips, brightness, contrast, blur, noise; audio gain and noise)")
    hard_negatives: bool = Field(True, description="vision-text stage: a caption of two objects ('a red ring and a "
                                 "blue circle') gets its attribute-swapped caption ('a red circle and a blue ring') "
                                 "as an extra negative (NegCLIP), so an embedding must bind each attribute to its "
                                 "object rather than hold a bag of words")
    save_every: int | None = Field(250, ge=1, description="checkpoint every N steps (plus one at the end)")
    log_every: int = Field(50, ge=1, description="steps between logged losses")
    seed: int | None = Field(None, description="data order and augmentation seed; null = the global seed")


#: Capability -> the noise schedule its UNet learns, where it is not Stable Diffusion 1.x's (the noise
#: predicted on the scaled-linear schedule). Video learns the velocity on a schedule whose last step is pure
#: noise: on the usual one it read a clip's motion from the signal left at the last step, and at render
#: time, from pure noise, the noise chose the direction instead of the caption (docs/zoo.md).
GENERATOR_SCHEDULES = {"text-to-video": {"prediction_type": "v_prediction", "zero_terminal_snr": True}}
#: Each tiny generator's stages and their steps, sized for a run of under 45 minutes on a 2-core CPU; docs/zoo.md
#: gives each shipped run's measured time (23 to 36 minutes of CPU time).
GENERATOR_STEPS = {"text-to-image": {"vae": 1000, "unet": 7000}, "text-to-video": {"text_encoder": 300, "unet": 3000},
                   "image-editing": {"unet": 5000}, "text-to-audio": {"vae": 1000, "vocoder": 6000, "unet": 2000}}


class ZooTrainConfig(Settings):
    """``modaverse zoo train``: the tiny generators learn the synthetic world (``zoo_train:``; docs/zoo.md).

    diffusers' own training conventions: noise-prediction MSE under the pipeline's scheduler, about a
    tenth of the captions dropped so classifier-free guidance has an unconditional branch, EMA weights
    shipped. The VAE (and for audio the mel VAE and the vocoder) train first: a random decoder renders
    noise whatever the UNet learns. The result is a diffusers folder the real plug-ins load.
    """

    output_dir: str = Field("runs/zoo-train", description="one run folder per capability under it")
    size: int = Field(32, ge=16, le=256, description="side of the pictures and video frames, in pixels")
    frames: int = Field(8, ge=2, le=32, description="frames per training clip (text-to-video)")
    seconds: float = Field(1.28, gt=0, le=10, description="length of the training sounds (text-to-audio): 128 mel frames, which the VAE and UNet halve evenly")
    steps: dict[str, dict[str, int]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in GENERATOR_STEPS.items()},
        description="capability -> stage -> optimizer steps (stages: vae, unet; for audio also vocoder; for video "
                    "text_encoder first); a key "
                    "given replaces that one stage's default, 0 skips the stage")
    init_from: str | None = Field(None, description="the trained text-to-image pipeline video and editing start "
                                  "from; null = OUTPUT_DIR/text-to-image/final")
    batch_size: int = Field(32, ge=1, description="samples per step")
    video_batch_size: int = Field(8, ge=1, description="clips per step (text-to-video)")
    audio_batch_size: int = Field(16, ge=1, description="sounds per step (text-to-audio's VAE and UNet)")
    vocoder_batch_size: int = Field(8, ge=1, description="0.32-s slices per vocoder step: half the sounds of "
                                    "the other stages buys twice the steps in the same time, which tones need")
    audio_vae_channels: list[int] = Field(default_factory=lambda: [16, 32, 32],
                                          description="mel VAE block widths (a log-mel is 4x a picture's pixels)")
    vocoder_sweep_share: float = Field(0.5, ge=0, le=1, description="share of the vocoder's slices that are tones "
                                       "and sweeps at random pitches instead of the world's sounds: a vocoder inverts "
                                       "any log-mel, and a chirp passes through pitches no steady sound holds")
    vocoder_channels: int = Field(128, ge=8, description="HiFi-GAN vocoder: channels before its first upsampling "
                                  "(at 32, 2,000 steps still left tones silent)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW), warmup then cosine, per stage")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of each stage's steps warming up")
    prediction_type: Literal["epsilon", "v_prediction"] | None = Field(
        None, description="what the UNet learns to predict: the noise (Stable Diffusion 1.x) or the velocity "
        "(2.x), whose loss stays large at the noisiest steps, where layout and motion are decided; written into the "
        "pipeline's scheduler config. null = each capability's own (GENERATOR_SCHEDULES: video the velocity, the "
        "others the noise)")
    zero_terminal_snr: bool | None = Field(
        None, description="rescale the noise schedule so its last step is pure noise (Lin et al. 2024), sampled "
        "from that step ('trailing' timesteps); needs v_prediction. Otherwise the UNet learns to read a clip's layout "
        "and motion from the signal left at the last step, which pure noise at render time does not have; written "
        "into the pipeline's scheduler config. null = each capability's own (video yes, the others no)")
    caption_dropout: float = Field(0.1, ge=0, lt=1, description="share of captions replaced by the empty prompt")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of the UNet's weights (what ships)")
    kl_weight: float = Field(1e-4, ge=0, description="VAE: weight of the KL term beside the reconstruction")
    pair_share: float = Field(0.5, ge=0, le=1, description="text-to-image: share of two-object pictures")
    vae_channels: list[int] = Field(default_factory=lambda: [32, 64, 64],
                                    description="VAE block widths; each past the first halves the side")
    unet_channels: list[int] = Field(default_factory=lambda: [32, 64], description="UNet block widths")
    unet_layers: int = Field(2, ge=1, description="resnet layers per UNet block")
    text_hidden: int = Field(64, ge=8, description="width of the frozen, seeded text encoder")
    @model_validator(mode="after")
    def _zero_snr_needs_velocity(self):
        if self.zero_terminal_snr and self.prediction_type == "epsilon":
            raise ValueError(_ZERO_SNR_NEEDS)
        return self

    def schedule(self, capability: str) -> dict[str, Any]:
        """The capability's own noise schedule (GENERATOR_SCHEDULES) with what this config sets over it."""
        s = {"prediction_type": "epsilon", "zero_terminal_snr": False, **GENERATOR_SCHEDULES.get(capability, {})}
        if self.prediction_type is not None:
            s["prediction_type"] = self.prediction_type
            s["zero_terminal_snr"] &= self.prediction_type == "v_prediction"
        if self.zero_terminal_snr is not None:
            s["zero_terminal_snr"] = self.zero_terminal_snr
        if s["zero_terminal_snr"] and s["prediction_type"] != "v_prediction":
            raise ConfigError(f"zoo_train.zero_terminal_snr: {_ZERO_SNR_NEEDS}; {capability} predicts the noise "
                              "unless --set zoo_train.prediction_type=v_prediction")
        return s

    @field_validator("steps", mode="before")
    @classmethod
    def _over_the_defaults(cls, value: Any) -> Any:
        """``--set zoo_train.steps.text-to-audio.unet=500`` changes one stage, not the whole plan."""
        if not isinstance(value, dict):
            return value
        merged = {k: dict(v) for k, v in GENERATOR_STEPS.items()}
        for capability, stages in value.items():
            merged[capability] = {**merged.get(capability, {}), **stages} if isinstance(stages, dict) else stages
        return merged

    save_dtype: Literal["float32", "float16"] = Field(
        "float16", description="dtype of final/'s weights (half the bytes; the plug-ins load them as zoo.*.dtype)")
    save_every: int | None = Field(500, ge=1, description="checkpoint every N steps (plus one at the end)")
    log_every: int = Field(50, ge=1, description="steps between logged losses")
    seed: int | None = Field(None, description="sample and noise seed; null = the global seed")


_ZERO_SNR_NEEDS = ("zero_terminal_snr needs prediction_type v_prediction (at zero SNR the noisy input is the "
                   "noise itself, so predicting it teaches nothing)")

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
    bind: BindConfig = Field(default_factory=BindConfig)
    zoo_train: ZooTrainConfig = Field(default_factory=ZooTrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    checkpoint: str | None = Field(
        None, description="trained weights (a `modaverse train` run or step folder); null = untrained")
    zoo: dict[str, GeneratorConfig] = Field(
        default_factory=dict, description="capability -> generator; or a preset name from configs/zoo/ or a YAML path")

    @model_validator(mode="after")
    def _inputs_fit_the_towers(self) -> Config:
        """The towers' positional tables are built for one input size: media must be cut to it."""
        import json

        arch = json.loads(arch_file(self.encoder.arch).read_text())
        side = self.encoder.kwargs.get("image_size", arch.get("image_size", 224))
        for key, value in (("media.image_size", self.media.image_size), ("media.video.size", self.media.video.size)):
            if value != side:
                raise ValueError(f"{key} is {value}, but the encoder ({self.encoder.arch}) takes {side}-pixel inputs; "
                                 f"set {key}: {side}")
        return self


#: The settings that decide what a checkpoint's tensors are and mean. A checkpoint stores them
#: (``manifest.json``: ``config``), so ``--checkpoint RUN`` rebuilds its model with nothing
#: repeated by hand; a section listed as ``None`` is stored whole. Devices, dtypes and batch
#: sizes are left to the user's config.
SHAPING: dict[str, set[str] | None] = {
    "encoder": {"arch", "kwargs", "modalities", "weights", "weights_url", "sha256", "seed", "tower_weights"},
    "adaptor": None,
    "llm": {"model", "arch", "seed", "lora"},
    "prompt": None,
    "trainable": None,
}


def shaping(config: Config) -> dict:
    """The model-shaping sections of ``config`` (see :data:`SHAPING`), as plain JSON."""
    return {section: getattr(config, section).model_dump(mode="json", include=keys)
            for section, keys in SHAPING.items()}


# Reading YAML into a Config: its own module, re-exported here (it needs the schema above).
from modaverse.config.loading import (  # noqa: E402
    PATH_KEYS,
    config_summary,
    launch_configs,
    list_configs,
    list_zoo_presets,
    load_config,
    parse_override,
)

__all__ = ["PATH_KEYS", "config_summary", "launch_configs", "list_configs", "list_zoo_presets", "load_config", "parse_override"]
