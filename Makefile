# ComfyUI-Lune — every command provisions what it needs first (idempotent; see .ci/provision.sh).
ENV_DIR ?= $(or $(LUNE_ENV_DIR),$(HOME)/.cache/comfyui-lune)
PY = $(ENV_DIR)/venv/bin/python

.PHONY: env lint test test-fast main bench workflows

env:
	bash .ci/provision.sh

# Lint (ruff: pyflakes, pycodestyle, bugbear, no print, complexity; configuration in pyproject.toml).
lint: env
	$(ENV_DIR)/venv/bin/ruff check .

# The test command (CI runs this through .ci/run): lint, then every test.
test: lint
	. $(ENV_DIR)/env.sh && $(PY) -m pytest -q

test-fast: lint
	. $(ENV_DIR)/env.sh && $(PY) -m pytest -q -m "not slow"

# The main job: a bundled workflow through a real ComfyUI server, writing a PNG.
main: env
	. $(ENV_DIR)/env.sh && $(PY) -m tools.main_job

bench: env
	. $(ENV_DIR)/env.sh && $(PY) -m bench.run

# Regenerate the bundled workflows (+ thumbnails) and the English translations from the code.
workflows: env
	. $(ENV_DIR)/env.sh && $(PY) -m tools.build_workflows && $(PY) -m tools.build_locales
