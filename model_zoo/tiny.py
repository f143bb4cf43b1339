"""Tiny random generators for the offline profile, in the shapes diffusers' own tests use.

Each is a built-in generator whose pipeline is built from config with a fixed seed instead
of loaded: they run in well under a second on a CPU and exercise every code path of the
real plug-in after loading. The zoo finds them as plug-ins (``tiny-*`` entry points in
pyproject.toml), the way it finds anyone's. Their text encoders use the tiny tokenizer, so
nothing is downloaded.
"""

from __future__ import annotations

import torch

from modaverse.tiny import tokenizer as tiny_tokenizer
from model_zoo.audioldm import AudioLDM, AudioLDM2
from model_zoo.instruct_pix2pix import InstructPix2Pix
from model_zoo.stable_diffusion import StableDiffusion
from model_zoo.text_to_video import TextToVideoMS


def tokenizer():
    tok = tiny_tokenizer.tokenizer()
    tok.model_max_length = 77
    return tok


def scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def clip_text(tok, hidden: int = 32, layers: int = 2):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=4,
        num_hidden_layers=layers, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))


def vae(channels: int = 3, groups: int = 2, widths=(4, 8), sample_size: int = 32):
    """Each width past the first halves the side: (32, 64, 64) maps 32-px pictures to 8x8 latents."""
    from diffusers import AutoencoderKL

    n = len(widths)
    return AutoencoderKL(block_out_channels=list(widths), in_channels=channels, out_channels=channels,
                         down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n,
                         latent_channels=4, norm_num_groups=groups, sample_size=sample_size)


def unet2d(in_channels: int = 4, cross: int = 32, widths=(4, 8), groups: int = 2, sample_size: int = 32,
           layers: int = 1, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=tuple(widths), layers_per_block=layers, sample_size=sample_size, in_channels=in_channels,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross, norm_num_groups=groups,
        **extra)


def unet3d(cross: int = 32, widths=(4, 8), groups: int = 2, sample_size: int = 32, layers: int = 1,
           head_dim: int = 4, like_unet2d: bool = False):
    """With ``like_unet2d`` its blocks mirror :func:`unet2d`'s, so a trained image UNet's weights start
    it (the temporal layers are new)."""
    from diffusers import UNet3DConditionModel

    down = ("DownBlock3D", "CrossAttnDownBlock3D") if like_unet2d else ("CrossAttnDownBlock3D", "DownBlock3D")
    up = ("CrossAttnUpBlock3D", "UpBlock3D") if like_unet2d else ("UpBlock3D", "CrossAttnUpBlock3D")
    return UNet3DConditionModel(
        block_out_channels=tuple(widths), layers_per_block=layers, sample_size=sample_size, in_channels=4,
        out_channels=4, down_block_types=down, up_block_types=up, cross_attention_dim=cross,
        attention_head_dim=head_dim, norm_num_groups=groups)


def audioldm_parts(tok):
    """UNet, VAE, CLAP text encoder and HiFi-GAN vocoder of a tiny AudioLDM."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        ClapTextConfig,
        ClapTextModelWithProjection,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
    )

    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=(8, 16), class_embed_type="simple_projection", projection_class_embeddings_input_dim=8,
        class_embeddings_concat=True, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=[8, 16], in_channels=1, out_channels=1, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=4)
    text = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=len(tok), hidden_size=8, intermediate_size=37, num_attention_heads=1, num_hidden_layers=1,
        projection_dim=8, max_position_embeddings=80, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        # upsampling by 160 (AudioLDM's hop at 16 kHz): 100 mel frames per second, as in the real model
        model_in_dim=8, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[8, 5, 4],
        upsample_kernel_sizes=[16, 10, 8], resblock_kernel_sizes=[3, 7], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]],
        normalize_before=False))
    return unet, vae, text, vocoder


def _bpe_parts():
    import json

    model = json.loads(tiny_tokenizer.tokenizer_json())["model"]
    return model["vocab"], [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


def roberta_tokenizer():
    """The in-code BPE as a RobertaTokenizer: AudioLDM 2 checks the class to pick its padding."""
    from transformers import RobertaTokenizer

    vocab, merges = _bpe_parts()
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=77, bos_token="<s>", eos_token="</s>",
                            pad_token="<pad>", unk_token="<unk>")


def t5_tokenizer():
    """The in-code vocabulary as a (unigram) T5Tokenizer, for AudioLDM 2's second text encoder."""
    from transformers import T5Tokenizer

    vocab, _ = _bpe_parts()
    pieces = [(piece, -float(len(piece))) for piece in sorted(vocab, key=vocab.get)]
    return T5Tokenizer(vocab=pieces, model_max_length=77, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                       extra_ids=0)


def audioldm2_components() -> dict:
    """Every component of a tiny AudioLDM 2 (CLAP + T5 + GPT-2 + projection + UNet + VAE + vocoder)."""
    from diffusers import AudioLDM2ProjectionModel, AudioLDM2UNet2DConditionModel, AutoencoderKL
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2Model,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
    )

    tok, tok2 = roberta_tokenizer(), t5_tokenizer()
    text = ClapTextConfig(vocab_size=len(tok), hidden_size=8, intermediate_size=37, num_attention_heads=1,
                          num_hidden_layers=1, projection_dim=8, max_position_embeddings=80,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    audio = ClapAudioConfig(spec_size=8, window_size=4, num_mel_bins=8, intermediate_size=37, depths=[1, 1],
                            num_attention_heads=[1, 1], num_hidden_layers=1, hidden_size=192, projection_dim=8,
                            patch_size=2, patch_stride=2, patch_embed_input_channels=4)
    language_model = GPT2Model(GPT2Config(n_embd=16, n_head=2, n_layer=2, vocab_size=1000, n_ctx=99, n_positions=99))
    language_model.config.max_new_tokens = 8
    return {
        "text_encoder": ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(),
                                             projection_dim=16)),
        "text_encoder_2": T5EncoderModel(T5Config(vocab_size=len(tok2), d_model=32, d_ff=37, d_kv=8, num_heads=2,
                                                  num_layers=2, pad_token_id=tok2.pad_token_id,
                                                  eos_token_id=tok2.eos_token_id)),
        "projection_model": AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=32, langauge_model_dim=16),
        "language_model": language_model,
        "tokenizer": tok,
        "tokenizer_2": tok2,
        "feature_extractor": ClapFeatureExtractor(feature_size=8, hop_length=7900),
        "unet": AudioLDM2UNet2DConditionModel(
            block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, sample_size=32, in_channels=4,
            out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=(8, 16)),
        "vae": AutoencoderKL(block_out_channels=[8, 16], in_channels=1, out_channels=1, latent_channels=4,
                             down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                             norm_num_groups=8),
        "scheduler": scheduler(),
        "vocoder": SpeechT5HifiGan(SpeechT5HifiGanConfig(
            model_in_dim=8, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[8, 5, 4],
            upsample_kernel_sizes=[16, 10, 8], resblock_kernel_sizes=[3, 7],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]], normalize_before=False)),
    }


class _BuiltFromConfig:
    """Builds the pipeline from tiny components (seeded) where the real plug-in loads a checkpoint."""

    needs_model = False
    config: object

    def build(self):
        raise NotImplementedError

    def _from_pretrained(self, dtype: torch.dtype):
        torch.manual_seed(self.config.seed)
        pipe = self.build()
        for component in pipe.components.values():  # built modules start in training mode
            if isinstance(component, torch.nn.Module):
                component.eval()
        if dtype != torch.float32:
            pipe.to(dtype=dtype)
        return pipe


class TinyStableDiffusion(_BuiltFromConfig, StableDiffusion):
    name = "tiny-stable-diffusion"

    def build(self):
        from diffusers import StableDiffusionPipeline

        tok = tokenizer()
        return StableDiffusionPipeline(vae=vae(), text_encoder=clip_text(tok), tokenizer=tok,
                                       unet=unet2d(), scheduler=scheduler(), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)


class TinyTextToVideoMS(_BuiltFromConfig, TextToVideoMS):
    name = "tiny-text-to-video-ms"

    def build(self):
        from diffusers import TextToVideoSDPipeline

        tok = tokenizer()
        return TextToVideoSDPipeline(vae=vae(), text_encoder=clip_text(tok), tokenizer=tok,
                                     unet=unet3d(), scheduler=scheduler())


class TinyInstructPix2Pix(_BuiltFromConfig, InstructPix2Pix):
    name = "tiny-instruct-pix2pix"

    def build(self):
        from diffusers import StableDiffusionInstructPix2PixPipeline

        tok = tokenizer()
        return StableDiffusionInstructPix2PixPipeline(
            vae=vae(), text_encoder=clip_text(tok), tokenizer=tok, unet=unet2d(in_channels=8),
            scheduler=scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)


class TinyAudioLDM(_BuiltFromConfig, AudioLDM):
    name = "tiny-audioldm"

    def build(self):
        from diffusers import AudioLDMPipeline

        tok = tokenizer()
        unet, vae, text, vocoder = audioldm_parts(tok)
        return AudioLDMPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=scheduler(),
                                vocoder=vocoder)


class TinyAudioLDM2(_BuiltFromConfig, AudioLDM2):
    name = "tiny-audioldm2"

    def build(self):
        from diffusers import AudioLDM2Pipeline

        return AudioLDM2Pipeline(**audioldm2_components())
