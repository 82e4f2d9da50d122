"""The test bed: a real, pinned ComfyUI run in-process or over HTTP, and random-weight model fixtures with the
real key layouts. Used by tests/, tools/ and bench/; imports nothing from tests/."""

from .pack import import_pack

import_pack()  # the pack as ``comfyui_lune`` for everything that imports the test bed (testbed/pack.py)
