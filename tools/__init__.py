"""Product tools that are not part of the node pack: the demo run (make demo) and the workflow generator."""

import testbed  # noqa: F401,E402  (registers the pack as ``comfyui_lune``, testbed/pack.py)
