"""Pure-Python/torch text and token helpers for feeding Lyra (docs/reference.md §3, "Inference").

The author feeds T5 the raw prompt, tokenised to exactly ``seq_len`` (77)
tokens. ComfyUI prompts may contain CLIP-oriented syntax that means nothing to
T5, so :func:`strip_prompt_weighting` removes it before T5 tokenisation.
"""

from __future__ import annotations

import re
from typing import Sequence, TypeVar


from .errors import LyraInputError

__all__ = ["strip_prompt_weighting", "pad_or_truncate_ids"]

T = TypeVar("T")

# Private-use code points stand in for escaped parentheses while parsing.
_LP, _RP = "\ue000", "\ue001"
# ``embedding:<name>`` at the start, or after whitespace, a comma or '(' (ComfyUI's
# embedding reference); the name runs to the next whitespace, comma or parenthesis.
# A comma and spaces following the reference are removed with it.
_EMBEDDING = re.compile(r"(?<![^\s,(])embedding:[^\s,()" + _LP + _RP + r"]+[ \t]*,?[ \t]*")
_SPACES = re.compile(r"[ \t]{2,}")


def _drop_weight(group: str) -> str:
    """``"word:1.2"`` -> ``"word"``; text whose last ``:`` is not followed by a number is kept."""
    idx = group.rfind(":")
    if idx < 0:
        return group
    try:
        float(group[idx + 1:])
    except ValueError:
        return group
    return group[:idx]


def strip_prompt_weighting(text: str) -> str:
    """Remove ComfyUI prompt-weighting syntax so T5 sees plain text.

    * ``(word:1.2)`` -> ``word``; ``(word)`` -> ``word``; nesting works
      (``((a:1.1) b:0.9)`` -> ``a b``); ``(time: noon)`` keeps ``time: noon``
      because ``noon`` is not a number;
    * ``\\(`` and ``\\)`` -> literal ``(`` and ``)``;
    * ``embedding:name`` references are removed (T5 has no textual inversion),
      together with a following comma;
    * an unmatched ``(`` or ``)`` is kept literally;
    * runs of spaces collapse to one and the result is stripped (T5's
      tokenizer normalises whitespace the same way).
    """
    if not isinstance(text, str):
        raise LyraInputError(f"prompt must be text, got {type(text).__name__}.")
    s = text.replace(_LP, "").replace(_RP, "")
    s = s.replace("\\(", _LP).replace("\\)", _RP)
    s = _EMBEDDING.sub("", s)

    stack: list[list[str]] = [[]]
    for ch in s:
        if ch == "(":
            stack.append([])
        elif ch == ")" and len(stack) > 1:
            inner = _drop_weight("".join(stack.pop()))
            stack[-1].append(inner)
        else:
            stack[-1].append(ch)
    while len(stack) > 1:  # unclosed '(' stays literal
        inner = "".join(stack.pop())
        stack[-1].append("(" + inner)
    out = "".join(stack[0]).replace(_LP, "(").replace(_RP, ")")
    return _SPACES.sub(" ", out).strip()


def pad_or_truncate_ids(ids: Sequence[T], length: int, pad_id: T, eos_id: T | None = None) -> list[T]:
    """Fit one token-id sequence to exactly ``length`` items.

    Longer sequences are cut to ``length``; if ``eos_id`` is given the last
    kept slot is set to it (what a Hugging Face tokenizer does with
    ``truncation=True``: the end-of-sequence token survives). Shorter
    sequences are right-padded with ``pad_id`` (``padding="max_length"``).
    Items may be ints or ComfyUI's ``(token, weight)`` tuples.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise LyraInputError(f"length must be a positive integer, got {length!r}.")
    ids = list(ids)
    if len(ids) > length:
        if eos_id is not None:
            return ids[: length - 1] + [eos_id]
        return ids[:length]
    return ids + [pad_id] * (length - len(ids))

