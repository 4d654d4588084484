"""Command line of the synthetic-set generator; see syncon_jax/tools/generate/__init__.py."""

from __future__ import annotations

import dataclasses

from absl import flags
from ml_collections import config_flags

from syncon_jax import cli
from syncon_jax.errors import ConfigError, exit_on_user_error
from syncon_jax.tools.generate.run import BACKENDS, Options, generate

_D = Options()  # every default lives in Options


def define_flags() -> None:
  """Defined when the module runs as the program (cli.run turns flag mistakes into one line)."""
  config_flags.DEFINE_config_file(
    "config", None, "Config whose data set names the classes and picks the prompt templates."
  )
  flags.DEFINE_string("out", None, "The synthetic folder to write (resumed if it exists).")
  flags.DEFINE_string("model", None, "diffusers: pipeline folder or hub id; openai: e.g. dall-e-3.")
  flags.DEFINE_enum("backend", _D.backend, sorted(BACKENDS), "Text-to-image backend.")
  flags.DEFINE_integer("images_per_class", _D.images_per_class, "Images per class.")
  flags.DEFINE_list("classes", list(_D.classes), "Only these classes (default: all).")
  flags.DEFINE_string("classes_file", _D.classes_file, "Class names, one a line (not prepared).")
  flags.DEFINE_integer("prompts_per_class", _D.prompts_per_class, "First K prompts; 0: all.")
  flags.DEFINE_string("templates_file", _D.templates_file, "Templates, one a line, each with {}.")
  flags.DEFINE_string(
    "descriptions_file", _D.descriptions_file, 'JSON {"class": ["description", ...]}.'
  )
  flags.DEFINE_integer("seed", _D.seed, "Run seed; each image's seed hashes it with its place.")
  flags.DEFINE_float("guidance_scale", _D.guidance_scale, "Classifier-free guidance (diffusers).")
  flags.DEFINE_integer("num_inference_steps", _D.num_inference_steps, "Denoising steps.")
  flags.DEFINE_integer("image_size", 0, "Side of the images in px; 0: the model's default.")
  flags.DEFINE_integer("batch_size", _D.batch_size, "Images of one prompt per pipeline call.")
  flags.DEFINE_string("device", _D.device, "diffusers/filter device; default cuda if present.")
  flags.DEFINE_string("dtype", _D.dtype, "float16|bfloat16|float32; default fp16 on cuda.")
  flags.DEFINE_integer("torch_threads", _D.torch_threads, "CPU threads for torch; 0: default.")
  flags.DEFINE_string("api_base", _D.api_base, "openai: the API's base URL.")
  flags.DEFINE_string("api_size", _D.api_size, "openai: the size the API makes.")
  flags.DEFINE_string("api_quality", _D.api_quality, "openai: quality (standard, hd, low...).")
  flags.DEFINE_float("request_timeout", _D.request_timeout, "openai: seconds per request.")
  flags.DEFINE_integer("max_retries", _D.max_retries, "openai: retries per image.")
  flags.DEFINE_integer("workers", _D.workers, "openai: concurrent requests (threads).")
  flags.DEFINE_float("retry_delay", _D.retry_delay, "openai: first backoff in s (doubles).")
  flags.DEFINE_string("filter_model", _D.filter_model, "CLIP model for the zero-shot filter.")
  flags.DEFINE_bool("dry_run", _D.dry_run, "Check the inputs, print the plan, make nothing.")
  flags.DEFINE_float("log_every_s", _D.log_every_s, "Seconds between progress lines.")


def main(argv) -> None:
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}: flags take the form --name=value (see --helpshort)")
  values = {f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(Options)}
  values["image_size"] = values["image_size"] or None
  values["classes"] = tuple(values["classes"] or ())
  with exit_on_user_error():
    config = flags.FLAGS.config
    if config is None:
      raise ConfigError("--config is required (e.g. configs/flowers102.py).")
    generate(config.data, Options(**values))


if __name__ == "__main__":
  cli.run(main, define_flags)
