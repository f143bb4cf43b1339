"""Tiny random components for the offline profile, in the shapes diffusers' own tests use.

They run in well under a second on a CPU and save/load through the real
``save_pretrained``/``from_pretrained`` path. The tokenizer is the project's in-code BPE,
so nothing is downloaded.
"""

from __future__ import annotations


def tokenizer():
    from modaverse.llm import tiny_tokenizer

    tok = tiny_tokenizer()
    tok.model_max_length = 77
    return tok


def scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def clip_text(tok, hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))


def vae(channels: int = 3, groups: int = 2, widths=(4, 8)):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=list(widths), in_channels=channels, out_channels=channels,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         latent_channels=4, norm_num_groups=groups)


def unet2d(in_channels: int = 4, cross: int = 32, **extra):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross, norm_num_groups=2, **extra)


def unet3d():
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=2)


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
