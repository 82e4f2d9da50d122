"""Writes the bundled UI-format workflows in workflows/ (run: python -m tests.harness.build_workflows).

A test checks the committed files equal this output, so the JSON never drifts from the node schemas.
"""
from __future__ import annotations

import json
from pathlib import Path

from .ui_workflow import UiGraph

WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "workflows"
LUNE_COLOR = ("#2b3a55", "#1f2940")
DEFAULT_MODEL = "sd15-flow-lune-flux/unet/diffusion_pytorch_model.safetensors"
DEFAULT_COMPANION = "v1-5-pruned-emaonly.safetensors"
NOTE_TXT2IMG = """Lune (SD1.5 rectified flow) with the stock KSampler.

1. Put a Lune file in models/diffusion_models (diffusers unet/ folder or training .pt) or models/checkpoints
   (single-file). UNet-only files need CLIP+VAE: pick any SD1.5 checkpoint in clip_vae_from.
2. Load Lune Model sets flow sampling (shift 2.0; trained 2.0-2.5). No ModelSamplingSD3 needed.
3. Sampler: euler or lune_euler, scheduler simple/normal/beta or lune_flow (the author's grid). Avoid karras,
   exponential, linear_quadratic: they ignore the shift.
4. Author settings: 20-30 steps, CFG 7.5, 512x512, empty negative.
5. Lune Latent Multiply: 'variant default' = auto for lune, 1.0 for lune-flux. Too bright/pixelated? Use fixed
   and lower the multiplier."""


def lune_txt2img(model=DEFAULT_MODEL, companion=DEFAULT_COMPANION, variant="auto", steps=25, cfg=7.5, size=512,
                 sampler="euler", scheduler="simple", seed=42, note=NOTE_TXT2IMG,
                 positive="a watercolor painting of a lighthouse on a cliff at dusk, soft light") -> dict:
    g = UiGraph()
    g.add("Note", [note], pos=(20, 20), size=(420, 330), title="Read me")
    loader = g.add("LuneModelLoader", [model, variant, 2.0, companion], pos=(20, 380), size=(420, 170),
                   outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], color=LUNE_COLOR)
    pos_ = g.add("CLIPTextEncode", [positive], pos=(470, 20), size=(400, 160), title="Positive",
                 inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")])
    neg = g.add("CLIPTextEncode", [""], pos=(470, 210), size=(400, 120), title="Negative",
                inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")])
    latent = g.add("EmptyLatentImage", [size, size, 1], pos=(470, 360), size=(320, 110),
                   outputs=[("LATENT", "LATENT")])
    ks = g.add("KSampler", [seed, "fixed", steps, cfg, sampler, scheduler, 1.0], pos=(900, 20), size=(320, 270),
               inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                       ("latent_image", "LATENT")], outputs=[("LATENT", "LATENT")])
    mult = g.add("LuneLatentMultiply", ["variant default", 1.0], pos=(900, 320), size=(320, 110),
                 inputs=[("samples", "LATENT"), ("model", "MODEL")],
                 outputs=[("samples", "LATENT"), ("factor", "FLOAT")], color=LUNE_COLOR)
    dec = g.add("VAEDecode", [], pos=(1250, 20), size=(220, 50), inputs=[("samples", "LATENT"), ("vae", "VAE")],
                outputs=[("IMAGE", "IMAGE")])
    save = g.add("SaveImage", ["lune"], pos=(1250, 110), size=(400, 420), inputs=[("images", "IMAGE")])
    g.connect(loader, 1, pos_, "clip")
    g.connect(loader, 1, neg, "clip")
    g.connect(loader, 0, ks, "model")
    g.connect(pos_, 0, ks, "positive")
    g.connect(neg, 0, ks, "negative")
    g.connect(latent, 0, ks, "latent_image")
    g.connect(ks, 0, mult, "samples")
    g.connect(loader, 0, mult, "model")
    g.connect(mult, 0, dec, "samples")
    g.connect(loader, 2, dec, "vae")
    g.connect(dec, 0, save, "images")
    return g.to_json()


WORKFLOWS = {
    "lune_txt2img": lune_txt2img,
}
DEFAULT_WORKFLOW = "lune_txt2img"


def render(name: str) -> str:
    return json.dumps(WORKFLOWS[name](), indent=1) + "\n"


def main() -> None:
    WORKFLOWS_DIR.mkdir(exist_ok=True)
    for name in WORKFLOWS:
        (WORKFLOWS_DIR / f"{name}.json").write_text(render(name))


if __name__ == "__main__":
    main()
