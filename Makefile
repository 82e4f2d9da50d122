# ComfyUI-Lune — every command provisions what it needs first (idempotent; see .ci/provision.sh).
ENV_DIR ?= $(HOME)/.cache/comfyui-lune
PY = $(ENV_DIR)/venv/bin/python

.PHONY: env test test-fast main bench

env:
	bash .ci/provision.sh

# The test command (CI runs this through .ci/run).
test: env
	. $(ENV_DIR)/env.sh && $(PY) -m pytest -q

test-fast: env
	. $(ENV_DIR)/env.sh && $(PY) -m pytest -q -m "not slow"

# The main job: a bundled workflow through a real ComfyUI server, writing a PNG.
main: env
	. $(ENV_DIR)/env.sh && $(PY) -m tools.main_job

bench: env
	. $(ENV_DIR)/env.sh && $(PY) -m bench.run
