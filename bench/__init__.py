"""Side-by-side measurements against the stock path or the anchor tool; results in bench/results/."""

import testbed  # noqa: F401  (registers the pack as ``comfyui_lune``, testbed/pack.py)
