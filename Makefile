# The two set-up commands of the README. Both create .venv themselves on a fresh machine.
#   make demo   render synthetic digits, pretrain SynCon on the digits, run the linear probe
#   make test   run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/demo
SYNTHETIC_DIR ?= runs/synthetic_digits
CONFIG ?= configs/digits.py

EXPERIMENT_DIR ?= runs/experiment
CIFAKE_STUDY_DIR ?= runs/cifake_digits

.PHONY: demo test experiment cifake-study install install-test lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: setup.py pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: setup.py pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(PY) -m syncon_jax.tools.render_digits --out=$(SYNTHETIC_DIR)
	$(PY) -m syncon_jax.main --config=$(CONFIG) --workdir=$(WORKDIR) \
	  --config.data.synthetic_dir=$(SYNTHETIC_DIR)
	$(PY) -m syncon_jax.linear_eval --config=$(CONFIG) --workdir=$(WORKDIR) \
	  --config.data.synthetic_dir=$(SYNTHETIC_DIR)

# The headline result (README "Which synthetic classes are bad"): every method x 3 seeds on
# renders with swapped and noise classes, then the other baselines on one seed; report in
# $(EXPERIMENT_DIR)/report. About 1.5 hours on the 2-core dev machine.
#
# Then the few-shot experiment (README "Few-shot: does SynCon pay?"): 2 real images per class,
# supcon, supcon_syn (clean, corrupted, oracle), the weighting schemes and the utility runs (one
# per class without its synthetic folder) over 10 seeds; report in $(EXPERIMENT_DIR)_fewshot/report.
# 190 runs: 26.5 minutes on the 2-core machine as two experiment processes on one root (measured
# 2026-12-03; about 13 s a plain run, 40 s a meta run in each process).
experiment: $(VENV)/.installed
	$(PY) -m syncon_jax.tools.experiment --config=$(CONFIG) --workdir=$(EXPERIMENT_DIR)
	JAX_COMPILATION_CACHE_DIR=$(EXPERIMENT_DIR)_fewshot/jax_cache \
	  $(PY) -m syncon_jax.tools.experiment --config=$(CONFIG):fewshot \
	  --workdir=$(EXPERIMENT_DIR)_fewshot

test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check syncon_jax tests configs benchmarks
	$(VENV)/bin/ruff format --check syncon_jax tests configs benchmarks

clean:
	rm -rf $(VENV) runs

# Train on synthetic, test on real (README "the CIFAKE study"): CNN and ViT classifiers on real,
# synthetic and both, 5 seeds; detection; the SynCon row. On the digits; report in
# $(CIFAKE_STUDY_DIR)/report.
cifake-study: $(VENV)/.installed
	$(PY) -m syncon_jax.tools.cifake_experiment --config=configs/cifake_study.py \
	  --workdir=$(CIFAKE_STUDY_DIR)
