"""The one place Lyra imports the Lune library (shared error root and safe file reading).

Inside the node pack, ``lyra`` and ``lune`` are sibling subpackages of the pack's package (``<pack>.lyra``), so
the import is relative; when ``lyra`` is imported as a top-level library (tests and tools run with the repository
root on ``sys.path``), ``lune`` is a top-level package beside it.
"""
from __future__ import annotations

if __package__ and "." in __package__:
    from ..lune import errors, safe_read
else:
    from lune import errors, safe_read

__all__ = ["errors", "safe_read"]
