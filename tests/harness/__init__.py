"""Test harness: a real, pinned ComfyUI (provisioned by .ci/provision.sh) run in-process or over HTTP."""
