"""FramePack pipeline components: tiny random ones built offline, and the full transformer config."""

from __future__ import annotations

from typing import Any

import torch

# Words of the in-code tokenizers; ids stay below the tiny text encoders' vocab_size (1000).
_SPECIAL = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}  # bos 0, pad 1, eos 2 as in the tiny configs
_WORDS = ("a", "an", "the", "of", "video", "clip", "shape", "shapes", "moving", "dance", "monkey", "person")

TINY_IMAGE_SIZE = 30  # SigLIP input side of the tiny image encoder (§2.5)
TINY_IMAGE_PROJ_DIM = 32  # tiny transformer image_proj_dim == tiny SigLIP hidden_size
TINY_PROMPT_TEMPLATE = {"template": "{}", "crop_start": 0}  # the real template crops 95 chat tokens


def full_transformer_config() -> dict[str, Any]:
    """Constructor kwargs of the released FramePack transformer (HunyuanVideo + FramePack extras, §2.1)."""
    return {
        "in_channels": 16,
        "out_channels": 16,
        "num_attention_heads": 24,
        "attention_head_dim": 128,  # inner dim 3072
        "num_layers": 20,  # dual-stream blocks
        "num_single_layers": 40,
        "num_refiner_layers": 2,
        "mlp_ratio": 4.0,
        "patch_size": 2,
        "patch_size_t": 1,
        "qk_norm": "rms_norm",
        "guidance_embeds": True,  # distilled guidance, fed as an embedding
        "text_embed_dim": 4096,  # Llava-Llama-3-8B hidden states
        "pooled_projection_dim": 768,  # CLIP-L pooled output
        "rope_theta": 256.0,
        "rope_axes_dim": (16, 56, 56),
        "image_condition_type": None,
        "has_image_proj": True,
        "image_proj_dim": 1152,  # SigLIP (flux redux) hidden size
        "has_clean_x_embedder": True,  # history patch embedders proj / proj_2x / proj_4x
    }


def tiny_transformer_config() -> dict[str, Any]:
    """Constructor kwargs of diffusers' test transformer (§2.5): 73,696 parameters."""
    return {
        "in_channels": 4,
        "out_channels": 4,
        "num_attention_heads": 2,
        "attention_head_dim": 10,
        "num_layers": 1,
        "num_single_layers": 1,
        "num_refiner_layers": 1,
        "patch_size": 2,
        "patch_size_t": 1,
        "guidance_embeds": True,
        "text_embed_dim": 16,  # == tiny Llama hidden_size
        "pooled_projection_dim": 8,  # == tiny CLIP hidden_size
        "rope_axes_dim": (2, 4, 4),
        "image_condition_type": None,
        "has_image_proj": True,  # the SigLIP image branch is part of the tiny model
        "image_proj_dim": TINY_IMAGE_PROJ_DIM,
        "has_clean_x_embedder": True,
    }


def _word_tokenizer(max_length: int):
    """A fast WordLevel tokenizer built in code: `<s> words </s>`, padded with `<pad>` (no download)."""
    from tokenizers import (  # deferred: tokenizers is a heavy import
        Tokenizer,
        models,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast  # deferred: heavy import

    vocab = {**_SPECIAL, **{w: len(_SPECIAL) + i for i, w in enumerate(_WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # bos/eos around every text, as the Llama and CLIP tokenizers do: no prompt encodes to zero tokens
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", _SPECIAL["<s>"]), ("</s>", _SPECIAL["</s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=max_length,
    )


def tiny_components(seed: int = 0) -> dict[str, Any]:
    """Every `HunyuanVideoFramepackPipeline` component with random weights (seeded), built offline (§2.5).

    Text is padded as the real model pads it (Llama: `max_sequence_length` 256, CLIP: 77 tokens), and
    the image branch is real: a tiny SigLIP whose hidden size is the transformer's `image_proj_dim`.
    """
    from diffusers import (  # deferred: diffusers is a heavy import
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoFramepackTransformer3DModel,
    )
    from transformers import (  # deferred: transformers is a heavy import
        CLIPTextConfig,
        CLIPTextModel,
        LlamaConfig,
        LlamaModel,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    fork = torch.random.fork_rng()
    with fork:
        torch.manual_seed(seed)
        transformer = HunyuanVideoFramepackTransformer3DModel(**tiny_transformer_config())
        vae = AutoencoderKLHunyuanVideo(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            down_block_types=("HunyuanVideoDownBlock3D",) * 4,
            up_block_types=("HunyuanVideoUpBlock3D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            act_fn="silu",
            norm_num_groups=4,
            scaling_factor=0.476986,
            spatial_compression_ratio=8,
            temporal_compression_ratio=4,
            mid_block_add_attention=True,
        )
        text_encoder = LlamaModel(
            LlamaConfig(
                bos_token_id=0,
                eos_token_id=2,
                hidden_size=16,
                intermediate_size=37,
                layer_norm_eps=1e-05,
                num_attention_heads=4,
                num_hidden_layers=2,
                pad_token_id=1,
                vocab_size=1000,
                hidden_act="gelu",
            )
        )
        text_encoder_2 = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=2,
                hidden_size=8,
                intermediate_size=37,
                layer_norm_eps=1e-05,
                num_attention_heads=4,
                num_hidden_layers=2,
                pad_token_id=1,
                vocab_size=1000,
                hidden_act="gelu",
                projection_dim=32,
            )
        )
        image_encoder = SiglipVisionModel(
            SiglipVisionConfig(
                hidden_size=TINY_IMAGE_PROJ_DIM,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=TINY_IMAGE_SIZE,
                patch_size=2,
            )
        )
    return {
        "transformer": transformer.eval(),
        "vae": vae.eval(),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": text_encoder.eval(),
        "tokenizer": _word_tokenizer(max_length=256),
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer_2": _word_tokenizer(max_length=77),
        "image_encoder": image_encoder.eval(),
        "feature_extractor": SiglipImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}),
    }
