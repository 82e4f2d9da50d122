"""Template-browser thumbnails for the bundled workflows: ``workflows/<name>.jpg`` (ComfyUI serves the same-name
.jpg next to each JSON at /api/workflow_templates/<pack>/<name>.jpg).

Each thumbnail is drawn from the workflow itself with PIL: the node graph as boxes and links (Lune nodes in the
pack colour, the note left out), the workflow's name, and — for the sampling nodes — the σ schedule it uses
(``σ_i = shift(1 − i/N)`` against the unshifted line). Small (≈ 20 KB each), written by
``python -m tools.build_workflows``.
"""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from comfyui_lune.lune.variants import SHIFT_FROM_VARIANT, UNNAMED, VARIANTS, get_variant

SIZE = (512, 384)
BG, FG, DIM = (24, 26, 34), (225, 228, 240), (120, 126, 150)
LUNE_ACCENT = (126, 156, 255)
NODE_FILL, LUNE_FILL = (58, 62, 76), (43, 58, 85)
MAX_BYTES = 60_000
SKIP = ("Note", "MarkdownNote")


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def shift(sigma: float, s: float) -> float:
    """SD3 shift σ' = s·σ / (1 + (s − 1)·σ) (docs/reference.md §1)."""
    return s * sigma / (1 + (s - 1) * sigma)


def _schedule(workflow: dict) -> tuple[float, int, str]:
    """(shift, steps, label) shown in the thumbnail, read from the workflow's own widgets."""
    s, steps, label = 2.0, 25, "shift 2.0"
    for node in workflow["nodes"]:
        w = node.get("widgets_values") or []
        if node["type"] == "LuneModelLoader":
            s = float(w[2])
            if s == SHIFT_FROM_VARIANT:  # the chosen variant's trained shift (auto: drawn as Lune's)
                s = (get_variant(w[1]) if w[1] in VARIANTS else UNNAMED).default_shift
            label = "sol: no flow shift" if w[1] == "sol" else f"shift {s:g}"
            if w[1] == "sol":
                s = 1.0
        elif node["type"] == "LuneDiscreteSchedule":  # trailing timesteps are linear in t: the unshifted line
            s, label = 1.0, f"t/T, {w[0]} beta_end {w[3]:g}{' ZTSNR' if w[4] else ''}"
        elif node["type"] in ("KSampler", "ClownsharKSampler_Beta"):
            steps = int(w[2] if node["type"] == "KSampler" else w[3])
        elif node["type"] == "LuneSamplerAdapter":
            steps = int(w[0])
    return s, steps, f"{label}, {steps} steps"


def _graph(draw: ImageDraw.ImageDraw, workflow: dict, box: tuple[int, int, int, int]) -> None:
    nodes = [n for n in workflow["nodes"] if n["type"] not in SKIP]
    x0 = min(n["pos"][0] for n in nodes)
    y0 = min(n["pos"][1] for n in nodes)
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes)
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes)
    bx0, by0, bx1, by1 = box
    k = min((bx1 - bx0) / (x1 - x0), (by1 - by0) / (y1 - y0))

    def pt(x, y):
        return bx0 + (x - x0) * k, by0 + (y - y0) * k

    rects = {n["id"]: (*pt(*n["pos"]), *pt(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])) for n in nodes}
    for link in workflow.get("links", []):
        _, src, _, dst, _, _ = link[:6]
        if src in rects and dst in rects:
            a, b = rects[src], rects[dst]
            draw.line([(a[2], (a[1] + a[3]) / 2), (b[0], (b[1] + b[3]) / 2)], fill=DIM, width=1)
    font = _font(9)
    for n in nodes:
        r = rects[n["id"]]
        lune = n["type"].startswith(("Lune", "Lyra"))
        draw.rounded_rectangle(r, radius=3, fill=LUNE_FILL if lune else NODE_FILL,
                               outline=LUNE_ACCENT if lune else DIM, width=1)
        label = n.get("title") or n["type"]
        while label and draw.textlength(label, font=font) > r[2] - r[0] - 4:
            label = label[:-1]
        draw.text((r[0] + 2, r[1] + 1), label, fill=FG, font=font)


def _plot(draw: ImageDraw.ImageDraw, s: float, steps: int, label: str, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=DIM)

    def pt(i, sigma):
        return x0 + 6 + (x1 - x0 - 12) * i / steps, y1 - 6 - (y1 - y0 - 12) * sigma

    base = [pt(i, 1 - i / steps) for i in range(steps + 1)]
    draw.line(base, fill=DIM, width=1)
    curve = [pt(i, shift(1 - i / steps, s)) for i in range(steps + 1)]
    draw.line(curve, fill=LUNE_ACCENT, width=2)
    for p in curve:
        draw.ellipse((p[0] - 1.5, p[1] - 1.5, p[0] + 1.5, p[1] + 1.5), fill=LUNE_ACCENT)
    font = _font(12)
    draw.text((x0 + 10, y1 - 40), f"sigma schedule: {label}", fill=FG, font=font)
    draw.text((x0 + 10, y1 - 22), "unshifted (shift 1)", fill=DIM, font=font)


def render_thumbnail(name: str, workflow: dict) -> bytes:
    """JPEG bytes of the thumbnail for ``workflow`` (deterministic for a given Pillow)."""
    im = Image.new("RGB", SIZE, BG)
    draw = ImageDraw.Draw(im)
    draw.text((12, 8), "Lune", fill=LUNE_ACCENT, font=_font(20))
    draw.text((70, 12), name, fill=FG, font=_font(15))
    _graph(draw, workflow, (12, 44, SIZE[0] - 12, 230))
    s, steps, label = _schedule(workflow)
    _plot(draw, s, steps, label, (12, 244, SIZE[0] - 12, SIZE[1] - 12))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=85, optimize=True)
    data = out.getvalue()
    assert len(data) < MAX_BYTES, f"thumbnail for {name} is {len(data)} bytes"
    return data


def write_thumbnail(path: Path, name: str, workflow: dict) -> None:
    path.write_bytes(render_thumbnail(name, workflow))
