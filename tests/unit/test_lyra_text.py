"""Unit tests of the node-facing helpers: prompt cleaning, token fitting, blend, chunks (docs/reference.md §3,
"Inference")."""

from __future__ import annotations

import pytest
import torch

from comfyui_lune.lyra import LyraInputError, blend, pad_or_truncate_ids, strip_prompt_weighting, transform_chunks


# --------------------------------------------------------------------------- strip_prompt_weighting
@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a photo of a cat", "a photo of a cat"),
        ("a (cat:1.2) on a mat", "a cat on a mat"),
        ("a (cat) on a mat", "a cat on a mat"),
        ("((masterpiece)), best quality", "masterpiece, best quality"),
        ("((red:1.1) hat:0.8)", "red hat"),
        ("(cat: 1.5)", "cat"),
        ("(cat:.5)", "cat"),
        ("(time: noon)", "time: noon"),
        (r"a \(literal\) paren", "a (literal) paren"),
        (r"(\(x\):1.3)", "(x)"),
        ("embedding:EasyNegative, blurry", "blurry"),
        ("blurry, embedding:bad_hands, ugly", "blurry, ugly"),
        ("(embedding:foo:1.2) cat", "cat"),
        ("a cat\nembedding:sub/dir.pt", "a cat"),
        ("not_an_embedding:x", "not_an_embedding:x"),
        ("unclosed (paren", "unclosed (paren"),
        ("stray ) paren", "stray ) paren"),
        ("  spaced   out  ", "spaced out"),
        ("", ""),
    ],
)
def test_strip_prompt_weighting(prompt, expected):
    assert strip_prompt_weighting(prompt) == expected


def test_strip_prompt_weighting_rejects_non_text():
    with pytest.raises(LyraInputError):
        strip_prompt_weighting(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- pad_or_truncate_ids
def test_pad_short_sequence():
    assert pad_or_truncate_ids([5, 6, 1], 6, pad_id=0) == [5, 6, 1, 0, 0, 0]


def test_truncate_keeps_eos():
    ids = list(range(10, 100)) + [1]
    out = pad_or_truncate_ids(ids, 77, pad_id=0, eos_id=1)
    assert len(out) == 77 and out[-1] == 1 and out[:76] == ids[:76]


def test_truncate_without_eos_and_exact_length():
    assert pad_or_truncate_ids([1, 2, 3, 4], 2, pad_id=0) == [1, 2]
    assert pad_or_truncate_ids([1, 2, 3], 3, pad_id=0, eos_id=9) == [1, 2, 3]


def test_pad_works_with_comfy_token_weight_pairs():
    out = pad_or_truncate_ids([(5, 1.0), (1, 1.0)], 4, pad_id=(0, 1.0))
    assert out == [(5, 1.0), (1, 1.0), (0, 1.0), (0, 1.0)]


@pytest.mark.parametrize("length", [0, -3, 2.5, True])
def test_pad_rejects_bad_length(length):
    with pytest.raises(LyraInputError):
        pad_or_truncate_ids([1], length, pad_id=0)


# --------------------------------------------------------------------------- blend
def test_blend_strength_zero_returns_clip_bit_for_bit():
    clip = torch.randn(1, 77, 768, dtype=torch.float16)
    recon = torch.randn(1, 77, 768)
    out = blend(clip, recon, 0.0)
    assert out is clip
    assert torch.equal(out, clip)


def test_blend_strength_one_returns_recon_exactly():
    clip = torch.randn(1, 77, 768)
    recon = torch.randn(1, 77, 768)
    out = blend(clip, recon, 1.0)
    assert out is recon and torch.equal(out, recon)
    assert torch.equal(blend(clip.half(), recon, 1), recon.half())


def test_blend_interpolates_in_clip_dtype():
    clip = torch.zeros(1, 2, 3)
    recon = torch.full((1, 2, 3), 4.0)
    torch.testing.assert_close(blend(clip, recon, 0.25), torch.full((1, 2, 3), 1.0))
    torch.testing.assert_close(blend(clip, recon, 1.5), torch.full((1, 2, 3), 6.0))
    assert blend(clip.half(), recon, 0.5).dtype == torch.float16


def test_blend_rejects_mismatch_and_nan():
    with pytest.raises(LyraInputError, match="cannot blend"):
        blend(torch.zeros(1, 77, 768), torch.zeros(1, 154, 768), 0.5)
    with pytest.raises(LyraInputError, match="finite"):
        blend(torch.zeros(1), torch.zeros(1), float("nan"))


# --------------------------------------------------------------------------- transform_chunks
def test_transform_chunks_transforms_first_chunk_only():
    clip = torch.randn(2, 77 * 3, 768)
    t5 = torch.randn(2, 77, 768)
    seen = {}

    def fn(c, t):
        seen["c"], seen["t"] = c, t
        return c + 1.0

    out = transform_chunks(clip, t5, fn)
    assert out.shape == clip.shape
    assert torch.equal(seen["c"], clip[:, :77]) and seen["t"] is t5
    assert torch.equal(out[:, :77], clip[:, :77] + 1.0)
    assert torch.equal(out[:, 77:], clip[:, 77:])


def test_transform_chunks_single_chunk_and_identity_is_bit_exact():
    clip = torch.randn(1, 77, 768, dtype=torch.float16)
    t5 = torch.randn(1, 77, 768)
    assert torch.equal(transform_chunks(clip, t5, lambda c, t: blend(c, torch.randn(c.shape), 0.0)), clip)
    long = torch.randn(1, 154, 768)
    assert torch.equal(transform_chunks(long, t5, lambda c, t: c), long)


def test_transform_chunks_casts_back_and_validates():
    clip = torch.randn(1, 154, 768, dtype=torch.float16)
    t5 = torch.randn(1, 77, 768)
    out = transform_chunks(clip, t5, lambda c, t: c.float() * 0)
    assert out.dtype == torch.float16 and torch.equal(out[:, 77:], clip[:, 77:])
    with pytest.raises(LyraInputError, match="at least one 77-token chunk"):
        transform_chunks(torch.randn(1, 10, 768), t5, lambda c, t: c)
    with pytest.raises(LyraInputError, match="returned"):
        transform_chunks(clip, t5, lambda c, t: c[:, :5])


def test_node_style_pipeline_with_tiny_model():
    from comfyui_lune.lyra import LyraConfig, LyraVAE
    from testbed.fixtures.lyra_files import TINY, tiny_config

    model = LyraVAE(LyraConfig.from_dict(tiny_config())).eval()
    clip = torch.randn(1, 154, TINY["clip"], dtype=torch.float16)
    t5 = torch.randn(1, 77, TINY["t5"])

    def run(strength):
        def fn(c, t):
            with torch.inference_mode():
                recon = model.reconstruct({"clip": c, "t5": t})["clip"]
            return blend(c, recon, strength)

        return transform_chunks(clip, t5, fn)

    assert torch.equal(run(0.0), clip)
    full = run(1.0)
    with torch.inference_mode():
        expected = model.reconstruct({"clip": clip[:, :77], "t5": t5})["clip"].half()
    assert torch.equal(full[:, :77], expected) and torch.equal(full[:, 77:], clip[:, 77:])
