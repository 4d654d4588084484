"""Zero-shot filter: keep an image when a CLIP model recognises its class.

He et al. 2023 ("Is synthetic data from generative models ready for image recognition?")
keep a synthetic image when CLIP's softmax over the class prompts gives its class more than
1/num_classes. The class prompts are the data set's first template ("a photo of a {}, a type
of flower."); the softmax runs over every class of the data set. Any CLIP checkpoint
transformers' CLIPModel loads (a local folder or a hub id) serves.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from syncon_jax.errors import ConfigError, UserError
from syncon_jax.tools.generate.backends import INSTALL_HINT, _first_line, local_path


def _pooled(output):
  """transformers 5 returns a model output whose pooler_output is the projection; 4 a tensor."""
  return getattr(output, "pooler_output", output)


class ZeroShotFilter:
  """CLIP zero-shot class probabilities for generated images.

  class_prompts: one text per class of the data set, in class order.
  """

  def __init__(self, model: str, class_prompts: Sequence[str], *, device: str | None = None):
    try:
      import torch
      import transformers
    except ImportError as e:
      raise UserError(f"--filter_model needs torch and transformers: {INSTALL_HINT} ({e})") from e
    if len(class_prompts) < 2:
      raise ConfigError("The zero-shot filter needs at least two classes to choose between.")
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    path = local_path(model, "--filter_model", "a saved CLIP model") or model
    self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
      self.model = transformers.CLIPModel.from_pretrained(path).to(self.device).eval()
      self.processor = transformers.CLIPProcessor.from_pretrained(path)
    except Exception as e:  # OSError, ValueError, KeyError...: the folder is not a CLIP model
      raise UserError(f"Cannot load --filter_model {model!r} as CLIP: {_first_line(e)}") from e
    self.name = model
    self._torch = torch
    with torch.inference_mode():
      tokens = self.processor(text=list(class_prompts), padding=True, return_tensors="pt")
      text = _pooled(self.model.get_text_features(**tokens.to(self.device)))
      self.text = torch.nn.functional.normalize(text.float(), dim=-1)
      self.logit_scale = float(self.model.logit_scale.exp())
    self.num_classes = len(class_prompts)

  def probabilities(self, images: Sequence[Image.Image]) -> np.ndarray:
    """float64 [len(images), num_classes]: softmax over classes of scale * cos(image, text)."""
    torch = self._torch
    with torch.inference_mode():
      pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
      feats = _pooled(self.model.get_image_features(pixel_values=pixels.to(self.device)))
      feats = torch.nn.functional.normalize(feats.float(), dim=-1)
      logits = (self.logit_scale * feats @ self.text.T).double().cpu().numpy()
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)

  def keep(self, probability_of_class: float) -> bool:
    """He et al.'s rule: the image's class beats the uniform 1/num_classes."""
    return probability_of_class > 1.0 / self.num_classes
