# ComfyUI-Lune — every command provisions what it needs first (idempotent; see .ci/provision.sh).
ENV_DIR ?= $(or $(LUNE_ENV_DIR),$(HOME)/.cache/comfyui-lune)
PY = $(ENV_DIR)/venv/bin/python
# ComfyUI versions the ComfyUI suites run on (each provisioned in its own venv: $(ENV_DIR)/env-<version>.sh)
VERSIONS ?= 0.3.75,0.28.2

.PHONY: env lint test test-fast demo bench workflows

env:
	bash .ci/provision.sh

# Lint (ruff: pyflakes, pycodestyle, bugbear, no print, complexity; configuration in pyproject.toml).
lint: env
	$(ENV_DIR)/venv/bin/ruff check .

# The test command (CI runs this through .ci/run): lint, the unit tests once, then tests/integration + tests/browser
# on every ComfyUI version in VERSIONS (one pytest process each), and a summary over all runs.
test: lint
	$(PY) tools/test_matrix.py --versions $(VERSIONS)

test-fast: lint
	$(PY) tools/test_matrix.py --versions $(VERSIONS) -- -m "not slow"

# The demo: a bundled workflow through a real ComfyUI server, writing a PNG.
demo: env
	. $(ENV_DIR)/env.sh && $(PY) -m tools.demo

bench: env
	. $(ENV_DIR)/env.sh && $(PY) -m bench.run

# Regenerate the bundled workflows (+ thumbnails) and the English translations from the code.
workflows: env
	. $(ENV_DIR)/env.sh && $(PY) -m tools.build_workflows && $(PY) -m tools.build_locales
