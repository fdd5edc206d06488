"""Wan2.1 I2V components: tiny random-weight builds for offline tests; the full-size transformer config."""

from __future__ import annotations

from typing import Any

import torch

TEXT_LEN = 512  # Wan's text length: the image-attention split assumes exactly this many text tokens
TINY_IMAGE_SIZE = 32  # tiny CLIP input side (pixels)
TINY_WORDS = [
    "a",
    "video",
    "of",
    "moving",
    "shapes",
    "circle",
    "square",
    "triangle",
    "dance",
    "monkey",
    "the",
    "red",
    "green",
    "blue",
    "white",
    "black",
    "on",
    "background",
    "bouncing",
    "negative",
    "blurry",
    "static",
]  # tiny tokenizer vocabulary; any other word maps to <unk>


def full_transformer_config() -> dict[str, Any]:
    """`WanTransformer3DModel` config of Wan2.1-I2V-14B-480P / -720P (diffusers conversion script)."""
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 40,
        "attention_head_dim": 128,  # inner dim 5120
        "in_channels": 36,  # 16 noisy latent + 4 mask + 16 condition-latent channels
        "out_channels": 16,
        "text_dim": 4096,  # UMT5-XXL hidden size
        "freq_dim": 256,
        "ffn_dim": 13824,
        "num_layers": 40,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "eps": 1e-6,
        "image_dim": 1280,  # CLIP ViT-H/14 hidden size
        "added_kv_proj_dim": 5120,  # image-attention keys/values (attn2.add_k_proj / add_v_proj)
        "rope_max_seq_len": 1024,
    }


def tiny_transformer_config() -> dict[str, Any]:
    """diffusers' test transformer plus `added_kv_proj_dim` so the real image-attention branch runs."""
    return {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        "attention_head_dim": 12,
        "in_channels": 36,
        "out_channels": 16,
        "text_dim": 32,  # = tiny UMT5 d_model
        "freq_dim": 256,
        "ffn_dim": 32,
        "num_layers": 2,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 32,
        "image_dim": 4,  # = tiny CLIP hidden size
        "added_kv_proj_dim": 24,  # = inner dim 2 x 12: the image-attention path of the real I2V model
    }


def tiny_tokenizer():
    """A word-level fast tokenizer built in code (no download), padding to `TEXT_LEN` tokens."""
    import tokenizers  # deferred: tokenizers is a heavy import
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in TINY_WORDS:
        vocab.setdefault(word, len(vocab))
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=TEXT_LEN,
    )


def tiny_components(seed: int = 0) -> dict[str, Any]:
    """Every `WanImageToVideoPipeline` component with random weights (seeded), built offline.

    Text encoder UMT5 (d_model 32), CLIP vision tower (hidden 4, 32x32 input, patch 1), VAE base_dim 3,
    transformer with the image-attention projections (`added_kv_proj_dim`); text is padded to 512
    tokens by the pipeline (`max_sequence_length=512`), so the 512-token image/text split is right.
    """
    from diffusers import (  # deferred: diffusers is a heavy import
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanTransformer3DModel,
    )
    from transformers import (  # deferred: heavy import
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        UMT5Config,
        UMT5EncoderModel,
    )

    tokenizer = tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKLWan(
            base_dim=3,
            z_dim=16,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[False, True, True],
        )
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=5, vocab_size=max(64, len(tokenizer))
            )
        ).eval()
        image_encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=4,
                projection_dim=4,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=TINY_IMAGE_SIZE,
                intermediate_size=16,
                patch_size=1,
            )
        ).eval()
        transformer = WanTransformer3DModel(**tiny_transformer_config())
    return {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "image_encoder": image_encoder,
        "image_processor": CLIPImageProcessor(crop_size=TINY_IMAGE_SIZE, size=TINY_IMAGE_SIZE),
        "transformer": transformer,
        "vae": vae,
        "scheduler": UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0
        ),
    }
