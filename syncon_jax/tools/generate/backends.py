"""Text-to-image backends: a local diffusers pipeline, or OpenAI's images API over HTTPS.

A backend turns one prompt and a list of seeds into as many PIL images, and says what the
metadata records about it (`describe`). `BACKENDS` maps --backend to its constructor.

diffusers (with torch) is the maintained local route: its Flax pipelines are gone. Any
text-to-image pipeline `AutoPipelineForText2Image` knows loads (Stable Diffusion 1.x/2.x,
SDXL, SDXL-Turbo, ...), from a local pipeline folder or a hub id. Each image gets its own CPU
torch.Generator seeded with its seed, so its initial noise is the same on any device and in
any batch.

The images API takes no seed: a rerun skips what exists, but a deleted image comes back
different. Requests are retried on timeouts, refused connections, 429, 5xx and malformed
bodies with exponential backoff; after the last try a UserError names the image.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from PIL import Image

from syncon_jax.errors import ConfigError, UserError

INSTALL_HINT = "pip install -e '.[generate]'"


class Backend(Protocol):
  batch_size: int  # images of one prompt made per call
  seeded: bool  # whether the seed fixes the image (metadata records the seed only then)

  def generate(self, prompt: str, seeds: Sequence[int], names: Sequence[str]) -> list[Image.Image]:
    """len(seeds) RGB images of `prompt`; names[i] is image i's file, for error messages."""

  def describe(self) -> dict[str, Any]:
    """What every metadata line records about how the image was made."""


def local_path(model: str, flag: str, what: str) -> str | None:
  """The folder `model` names, None for a hub id; ConfigError for a path that is no folder."""
  if not (model.startswith((".", "/", "~")) or os.path.exists(model)):
    return None
  path = os.path.expanduser(model)
  if not os.path.isdir(path):
    raise ConfigError(f"{flag} {model!r} is not a folder ({what}).")
  return path


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}"


class DiffusersBackend:
  """A local diffusers text-to-image pipeline (a folder with model_index.json, or a hub id)."""

  seeded = True

  def __init__(
    self,
    model: str,
    *,
    guidance_scale: float,
    num_inference_steps: int,
    image_size: int | None,
    batch_size: int,
    device: str | None = None,
    dtype: str | None = None,
    torch_threads: int = 0,
  ):
    try:
      import diffusers
      import torch
    except ImportError as e:
      raise UserError(f"--backend=diffusers needs torch and diffusers: {INSTALL_HINT} ({e})") from e
    if num_inference_steps < 1:
      raise ConfigError(f"--num_inference_steps must be at least 1, got {num_inference_steps}")
    if image_size is not None and (image_size < 8 or image_size % 8):
      raise ConfigError(f"--image_size for diffusers must be a multiple of 8, got {image_size}")
    # Their per-component loading bars would bury the progress log.
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    try:
      import transformers  # Stable Diffusion's text encoders come from transformers

      transformers.utils.logging.disable_progress_bar()
      transformers.utils.logging.set_verbosity_error()
    except ImportError:
      pass
    if torch_threads > 0:
      # Torch's own pool spins on busy cores; one thread per image is faster on a shared CPU.
      torch.set_num_threads(torch_threads)
    self._torch = torch
    self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("float16" if self.device.startswith("cuda") else "float32")
    if dtype not in ("float16", "bfloat16", "float32"):
      raise ConfigError(f"--dtype must be float16, bfloat16 or float32, got {dtype!r}")
    path = local_path(model, "--model", "a saved diffusers pipeline") or model
    try:
      pipe = diffusers.AutoPipelineForText2Image.from_pretrained(path, dtype=getattr(torch, dtype))
      pipe = pipe.to(self.device)
    except Exception as e:  # diffusers raises OSError, ValueError, KeyError, EnvironmentError...
      raise UserError(f"Cannot load --model {model!r} with diffusers: {_first_line(e)}") from e
    pipe.set_progress_bar_config(disable=True)
    self.pipe = pipe
    self.model = model
    self.guidance_scale = float(guidance_scale)
    self.num_inference_steps = int(num_inference_steps)
    self.image_size = image_size
    self.batch_size = int(batch_size)

  def generate(self, prompt: str, seeds: Sequence[int], names: Sequence[str]) -> list[Image.Image]:
    torch = self._torch
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    size = {} if self.image_size is None else {"height": self.image_size, "width": self.image_size}
    with torch.inference_mode():
      out = self.pipe(
        prompt=[prompt],
        num_images_per_prompt=len(seeds),
        generator=generators,
        num_inference_steps=self.num_inference_steps,
        guidance_scale=self.guidance_scale,
        output_type="pil",
        **size,
      )
    return [img.convert("RGB") for img in out.images]

  def describe(self) -> dict[str, Any]:
    return {
      "backend": "diffusers",
      "model": self.model,
      "guidance_scale": self.guidance_scale,
      "steps": self.num_inference_steps,
      "image_size": self.image_size,
    }


class _Retry(Exception):
  """A failure worth another try (timeout, 429, 5xx, malformed body); `wait` from Retry-After."""

  def __init__(self, reason: str, wait: float | None = None):
    super().__init__(reason)
    self.wait = wait


def _retry_after(headers) -> float | None:
  try:
    return float(headers.get("Retry-After")) if headers is not None else None
  except (TypeError, ValueError):
    return None


def decode_image_response(body: bytes) -> Image.Image:
  """The first image of an images API response body ({"data": [{"b64_json": ...}]})."""
  try:
    payload = json.loads(body)
    encoded = payload["data"][0]["b64_json"]
    raw = base64.b64decode(encoded, validate=True)
    with Image.open(io.BytesIO(raw)) as img:
      return img.convert("RGB")
  except (ValueError, KeyError, IndexError, TypeError, binascii.Error, OSError) as e:
    # json and base64 errors are ValueErrors, an undecodable image an OSError.
    raise _Retry(f"malformed response ({_first_line(e)})") from e


class OpenAIBackend:
  """OpenAI's images API (POST {api_base}/images/generations), one request per image.

  api_key: the key (from OPENAI_API_KEY); size: the API's size string ("1024x1024");
  image_size: if set, images are resized to image_size x image_size before they are written.
  """

  batch_size = 1
  seeded = False

  def __init__(
    self,
    model: str,
    *,
    api_key: str | None,
    api_base: str,
    size: str,
    quality: str | None,
    image_size: int | None,
    timeout: float,
    max_retries: int,
    retry_delay: float,
    max_retry_delay: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
  ):
    if not api_key:
      raise UserError(
        "--backend=openai needs an API key in the environment variable OPENAI_API_KEY."
      )
    if max_retries < 0:
      raise ConfigError(f"--max_retries must be >= 0, got {max_retries}")
    self.model = model
    self.url = api_base.rstrip("/") + "/images/generations"
    self._key = api_key
    self.size = size
    self.quality = quality
    self.image_size = image_size
    self.timeout = timeout
    self.max_retries = max_retries
    self.retry_delay = retry_delay
    self.max_retry_delay = max_retry_delay
    self._sleep = sleep

  def _request(self, prompt: str) -> Image.Image:
    body = {"model": self.model, "prompt": prompt, "n": 1, "size": self.size}
    # dall-e-2/3 send URLs unless asked; the gpt-image models always send b64_json and refuse
    # the parameter.
    if self.model.startswith("dall-e"):
      body["response_format"] = "b64_json"
    if self.quality:
      body["quality"] = self.quality
    request = urllib.request.Request(
      self.url,
      data=json.dumps(body).encode(),
      headers={"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"},
      method="POST",
    )
    try:
      with urllib.request.urlopen(request, timeout=self.timeout) as response:
        payload = response.read()
    except urllib.error.HTTPError as e:
      detail = e.read()[:300].decode("utf-8", "replace").strip()
      if e.code == 429 or e.code >= 500:
        raise _Retry(f"HTTP {e.code} {detail}", _retry_after(e.headers)) from e
      raise UserError(f"HTTP {e.code} {detail}") from e  # bad key, bad request: no retry
    except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
      raise _Retry(f"network error ({_first_line(e)})") from e
    return decode_image_response(payload)

  def generate(self, prompt: str, seeds: Sequence[int], names: Sequence[str]) -> list[Image.Image]:
    images = []
    for name in names:
      for attempt in range(self.max_retries + 1):
        try:
          image = self._request(prompt)
          break
        except UserError as e:
          raise UserError(f"openai: image {name!r} (prompt {prompt!r}) was refused: {e}") from e
        except _Retry as e:
          if attempt == self.max_retries:
            raise UserError(
              f"openai: image {name!r} (prompt {prompt!r}) failed after {attempt + 1} "
              f"attempts; last: {e}"
            ) from e
          wait = self.retry_delay * 2**attempt if e.wait is None else e.wait
          self._sleep(min(wait, self.max_retry_delay))
      if self.image_size is not None:
        image = image.resize((self.image_size, self.image_size), Image.Resampling.LANCZOS)
      images.append(image)
    return images

  def describe(self) -> dict[str, Any]:
    return {
      "backend": "openai",
      "model": self.model,
      "guidance_scale": None,
      "steps": None,
      "image_size": self.image_size,
      "api_size": self.size,
    }


BACKENDS = ("diffusers", "openai")
