"""Tiny randomly initialised models in the format of the real ones, for tests and benchmarks.

No weights can be downloaded here, so the tests build a Stable-Diffusion-shaped pipeline (a
two-level UNet2DConditionModel, an AutoencoderKL and a CLIP text encoder, a few thousand
parameters each) and a tiny CLIP, with a byte-level CLIP tokenizer whose vocabulary is every
byte symbol (no merges), and save them as the folders `from_pretrained` reads. Their images are
noise; what they test is the plumbing, not the pictures.
"""

from __future__ import annotations

WIDTH = 16  # hidden size of the text encoders and the UNet's cross-attention
MAX_TOKENS = 77  # CLIP's context; prompts are cut to this many tokens (bytes here)


def _byte_symbols() -> list[str]:
  """GPT-2/CLIP byte-level BPE's printable stand-in for each of the 256 bytes."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
  printable += list(range(ord("®"), ord("ÿ") + 1))
  extra = [b for b in range(256) if b not in printable]
  return [chr(b) for b in printable] + [chr(256 + k) for k in range(len(extra))]


def tokenizer():
  """A CLIPTokenizer over single bytes: every text tokenizes, one token per byte."""
  from transformers import CLIPTokenizer

  vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
  for suffix in ("", "</w>"):
    for symbol in _byte_symbols():
      vocab[symbol + suffix] = len(vocab)
  return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_TOKENS)


def _text_config(vocab_size: int) -> dict:
  return dict(
    vocab_size=vocab_size,
    hidden_size=WIDTH,
    intermediate_size=2 * WIDTH,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=MAX_TOKENS,
    projection_dim=WIDTH,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
  )


def save_pipeline(path: str, *, seed: int = 0) -> str:
  """Saves a tiny StableDiffusionPipeline (16 px images, latents 8 px) to path; returns path."""
  import torch
  from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
  )
  from transformers import CLIPTextConfig, CLIPTextModel

  torch.manual_seed(seed)
  tok = tokenizer()
  unet = UNet2DConditionModel(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(8, 16),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=WIDTH,
    attention_head_dim=4,
    norm_num_groups=4,
  )
  vae = AutoencoderKL(
    in_channels=3,
    out_channels=3,
    block_out_channels=(8, 16),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=16,
  )
  text_encoder = CLIPTextModel(CLIPTextConfig(**_text_config(len(tok))))
  # Stable Diffusion's own DDIM settings.
  scheduler = DDIMScheduler(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
  )
  pipe = StableDiffusionPipeline(
    vae=vae,
    text_encoder=text_encoder,
    tokenizer=tok,
    unet=unet,
    scheduler=scheduler,
    safety_checker=None,
    feature_extractor=None,
    requires_safety_checker=False,
  )
  pipe.save_pretrained(path)
  return path


def save_clip(path: str, *, seed: int = 0, image_size: int = 16) -> str:
  """Saves a tiny CLIPModel with its CLIPProcessor to path; returns path."""
  import torch
  from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

  torch.manual_seed(seed)
  tok = tokenizer()
  vision = dict(
    image_size=image_size,
    patch_size=image_size // 2,
    hidden_size=WIDTH,
    intermediate_size=2 * WIDTH,
    num_hidden_layers=2,
    num_attention_heads=2,
    projection_dim=WIDTH,
  )
  config = CLIPConfig(
    text_config=_text_config(len(tok)), vision_config=vision, projection_dim=WIDTH
  )
  CLIPModel(config).save_pretrained(path)
  image_processor = CLIPImageProcessor(
    size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
  )
  CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
  return path
