"""Latent models of the real train images (auto-decoder, autoencoder, VAE) whose per-image latents
feed tools/nearest_neighbors.py, for nearest-neighbour positives.

  python -m syncon_jax.latent.train --config=configs/latent.py:model=vae --workdir=runs/latent_vae

models.MODELS maps config.model.name to a model; train.train_and_write(config, workdir) trains
it and writes <workdir>/latents.npz (format in train.py and DESIGN.md).
"""
