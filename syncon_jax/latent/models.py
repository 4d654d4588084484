"""Latent models of the real train images: an auto-decoder, an autoencoder and a VAE.

Every model maps images (and their indices into the train split) to a loss and to one latent
vector per image, the representation that tools/nearest_neighbors.py searches:

  model = create_model(config.model, num_images=N, image_size=S, rngs=nnx.Rngs(seed))
  loss, metrics = model.loss(images, ids, key)  # images float [B, S, S, 3] in [0, 1], ids [B]
  z = model.represent(images, ids)              # [B, latent_dim] float32, deterministic

The reconstruction term of all three is the per-image sum of squared errors on [0, 1] pixels,
averaged over the batch: the negative log-likelihood of a Gaussian decoder of variance 1/2 up to
a constant, so the VAE with kl_weight=1 optimises the ELBO itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from syncon_jax.errors import ConfigError

Metrics = dict[str, jax.Array]


def reconstruction_loss(recon: jax.Array, images: jax.Array) -> jax.Array:
  """recon, images [B, S, S, 3] in [0, 1] -> scalar: per-image sum of squares, batch mean."""
  return jnp.mean(jnp.sum(jnp.square(recon - images), axis=(1, 2, 3)))


class ConvEncoder(nnx.Module):
  """images [B, S, S, 3] in [0, 1] -> [B, out_dim]: num_stages stride-2 3x3 convs (channels
  width, 2 width, ...) with ReLU, then a linear layer on the flattened S / 2**num_stages map."""

  def __init__(self, image_size: int, width: int, num_stages: int, out_dim: int, *, rngs):
    chans = [3] + [width * 2**i for i in range(num_stages)]
    self.convs = nnx.List(
      [
        nnx.Conv(chans[i], chans[i + 1], (3, 3), strides=(2, 2), rngs=rngs)
        for i in range(num_stages)
      ]
    )
    side = image_size // 2**num_stages
    self.out = nnx.Linear(side * side * chans[-1], out_dim, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    x = images * 2.0 - 1.0
    for conv in self.convs:
      x = nnx.relu(conv(x))
    return self.out(x.reshape(x.shape[0], -1))


class ConvDecoder(nnx.Module):
  """[B, latent_dim] -> images [B, S, S, 3] in (0, 1): the mirror of ConvEncoder (a linear layer
  to the S / 2**num_stages map, num_stages stride-2 transposed convs, a 3x3 conv, a sigmoid)."""

  def __init__(self, image_size: int, width: int, num_stages: int, latent_dim: int, *, rngs):
    chans = [width * 2**i for i in reversed(range(num_stages))]
    self.side = image_size // 2**num_stages
    self.top = chans[0]
    self.inp = nnx.Linear(latent_dim, self.side * self.side * self.top, rngs=rngs)
    outs = chans[1:] + [width]
    self.deconvs = nnx.List(
      [
        nnx.ConvTranspose(c_in, c_out, (4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
        for c_in, c_out in zip(chans, outs, strict=True)
      ]
    )
    self.out = nnx.Conv(width, 3, (3, 3), rngs=rngs)

  def __call__(self, z: jax.Array) -> jax.Array:
    x = nnx.relu(self.inp(z)).reshape(z.shape[0], self.side, self.side, self.top)
    for deconv in self.deconvs:
      x = nnx.relu(deconv(x))
    return nnx.sigmoid(self.out(x))


class AutoDecoder(nnx.Module):
  """DeepSDF's auto-decoder (Park et al. 2019): no encoder; a free code per train image,
  optimised with the decoder under a zero-mean Gaussian prior on the codes:

    loss = reconstruction + prior_weight * mean_batch ||code||^2

  The latent of image i is its code, codes[i]; the images passed to `represent` are unused.
  """

  def __init__(self, c: Any, *, num_images: int, image_size: int, rngs: nnx.Rngs):
    self.prior_weight = float(c.prior_weight)
    init = c.code_init_std * jax.random.normal(rngs.params(), (num_images, c.latent_dim))
    self.codes = nnx.Param(init)
    self.decoder = ConvDecoder(image_size, c.width, c.num_stages, c.latent_dim, rngs=rngs)

  def loss(self, images: jax.Array, ids: jax.Array, key: jax.Array) -> tuple[jax.Array, Metrics]:
    del key
    z = self.codes[ids]
    recon = reconstruction_loss(self.decoder(z), images)
    prior = jnp.mean(jnp.sum(jnp.square(z), axis=-1))
    loss = recon + self.prior_weight * prior
    return loss, {"loss": loss, "reconstruction": recon, "code_sq_norm": prior}

  def represent(self, images: jax.Array, ids: jax.Array) -> jax.Array:
    del images
    return self.codes[ids].astype(jnp.float32)


class AutoEncoder(nnx.Module):
  """A deterministic conv autoencoder: loss = reconstruction; the latent is encoder(image)."""

  def __init__(self, c: Any, *, num_images: int, image_size: int, rngs: nnx.Rngs):
    del num_images
    self.encoder = ConvEncoder(image_size, c.width, c.num_stages, c.latent_dim, rngs=rngs)
    self.decoder = ConvDecoder(image_size, c.width, c.num_stages, c.latent_dim, rngs=rngs)

  def loss(self, images: jax.Array, ids: jax.Array, key: jax.Array) -> tuple[jax.Array, Metrics]:
    del ids, key
    recon = reconstruction_loss(self.decoder(self.encoder(images)), images)
    return recon, {"loss": recon, "reconstruction": recon}

  def represent(self, images: jax.Array, ids: jax.Array) -> jax.Array:
    del ids
    return self.encoder(images).astype(jnp.float32)


class VAE(nnx.Module):
  """Kingma & Welling's VAE with a diagonal Gaussian posterior and a standard normal prior:

    loss = reconstruction(decoder(mu + sigma * eps)) + kl_weight * KL(N(mu, sigma^2) || N(0, I))

  (one sample per image, reparameterised). The latent of an image is the posterior mean mu.
  """

  def __init__(self, c: Any, *, num_images: int, image_size: int, rngs: nnx.Rngs):
    del num_images
    self.kl_weight = float(c.kl_weight)
    self.latent_dim = int(c.latent_dim)
    self.encoder = ConvEncoder(image_size, c.width, c.num_stages, 2 * c.latent_dim, rngs=rngs)
    self.decoder = ConvDecoder(image_size, c.width, c.num_stages, c.latent_dim, rngs=rngs)

  def posterior(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """images [B, S, S, 3] -> (mean, log variance), each [B, latent_dim]."""
    h = self.encoder(images)
    return h[:, : self.latent_dim], h[:, self.latent_dim :]

  def loss(self, images: jax.Array, ids: jax.Array, key: jax.Array) -> tuple[jax.Array, Metrics]:
    del ids
    mean, logvar = self.posterior(images)
    z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
    recon = reconstruction_loss(self.decoder(z), images)
    kl = jnp.mean(0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar, axis=-1))
    loss = recon + self.kl_weight * kl
    return loss, {"loss": loss, "reconstruction": recon, "kl": kl}

  def represent(self, images: jax.Array, ids: jax.Array) -> jax.Array:
    del ids
    return self.posterior(images)[0].astype(jnp.float32)


LatentModel = AutoDecoder | AutoEncoder | VAE

# model.name -> constructor(model_config, *, num_images, image_size, rngs)
MODELS: dict[str, Callable[..., LatentModel]] = {
  "autodecoder": AutoDecoder,
  "ae": AutoEncoder,
  "vae": VAE,
}

# Keys each model reads from config.model (besides name).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
  "autodecoder": ("latent_dim", "width", "num_stages", "code_init_std", "prior_weight"),
  "ae": ("latent_dim", "width", "num_stages"),
  "vae": ("latent_dim", "width", "num_stages", "kl_weight"),
}


def check_model_config(model_config: Any, image_size: int) -> None:
  """Raises ConfigError naming the key at fault; silent for a valid config.model."""
  name = model_config.get("name")
  if name not in MODELS:
    raise ConfigError(f"model.name={name!r} is not a latent model; valid: {sorted(MODELS)}")
  missing = [k for k in REQUIRED_KEYS[name] if model_config.get(k) is None]
  if missing:
    raise ConfigError(f"config.model is missing {missing}, required for model.name={name!r}")
  for key in ("latent_dim", "width", "num_stages"):
    value = model_config[key]
    if not isinstance(value, int) or value < 1:
      raise ConfigError(f"model.{key} must be a positive integer, got {value!r}")
  if image_size % 2**model_config.num_stages:
    raise ConfigError(
      f"data.image_size={image_size} must be divisible by 2**model.num_stages="
      f"{2**model_config.num_stages}"
    )
  for key in ("prior_weight", "kl_weight", "code_init_std"):
    if key in REQUIRED_KEYS[name] and not float(model_config[key]) >= 0:
      raise ConfigError(f"model.{key} must be >= 0, got {model_config[key]!r}")


def create_model(
  model_config: Any, *, num_images: int, image_size: int, rngs: nnx.Rngs
) -> LatentModel:
  """Builds the latent model named by model_config.name for num_images images of side S."""
  check_model_config(model_config, image_size)
  return MODELS[model_config.name](
    model_config, num_images=num_images, image_size=image_size, rngs=rngs
  )
