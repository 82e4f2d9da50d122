"""Writes the bundled UI-format workflows in workflows/ (run: python -m tools.build_workflows).

A test checks the committed files equal this output, so the JSON never drifts from the node schemas.
"""
from __future__ import annotations

import json
from pathlib import Path

from .thumbnails import write_thumbnail
from testbed.ui_workflow import UiGraph

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"
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
                 sampler="euler", scheduler="simple", seed=42, note=NOTE_TXT2IMG, prefix="lune",
                 positive="a watercolor painting of a lighthouse on a cliff at dusk, soft light") -> dict:
    g = UiGraph()
    g.add("Note", [note], pos=(20, 20), size=(420, 330), title="Read me")
    loader, pos_, neg = _lune_inputs(g, model, companion, variant, positive=positive)
    latent = g.add("EmptyLatentImage", [size, size, 1], pos=(470, 360), size=(320, 110),
                   outputs=[("LATENT", "LATENT")])
    ks = _ksampler(g, loader, pos_, neg, latent, [seed, "fixed", steps, cfg, sampler, scheduler, 1.0])
    _decode_and_save(g, loader, (ks, 0), prefix)
    return g.to_json()


# --------------------------------------------------------------------------- more bundled workflows (issue: templates)

SOL_MODEL = "sd15-flow-matching/sol.safetensors"
EXAMPLE_IMAGE = "example.png"  # the name ComfyUI ships in input/ (the tests copy one into their own input/)
RES4LYF_WIDGETS = [0.5, "multistep/res_2m", "beta57", 25, -1, 1.0, 7.5, 42, "fixed", "standard", True]

NOTE_FLUX = """Lune-Flux (AbstractPhil/sd15-flow-lune-flux): the recommended Lune, sampled as the author does.

1. Put the diffusers unet/ folder (or a single-file export) in models/diffusion_models; pick any SD1.5
   checkpoint in clip_vae_from for CLIP+VAE.
2. variant lune-flux (explicit, no guessing), shift 2.0 (trained 2.0-2.5).
3. lune_euler + lune_flow = the author's Euler on sigma_i = shift(1 - i/N), ending exactly at 0.
   euler + simple gives nearly the same grid.
4. 25 steps, CFG 7.5, 512x512, empty negative.
5. No latent multiplier is needed for lune-flux ('variant default' = 1.0)."""

NOTE_SOL = """Sol (AbstractPhil/sd15-flow-matching): NOT rectified flow.

Sol is v-prediction on SD1.5's discrete schedule. Load Lune Model with variant sol installs that
(the shift widget is ignored for sol; the author's default is unshifted).
- Sampler lune_euler + scheduler lune_flow = the author's Euler on the trailing discrete grid.
- 20 steps, CFG 7.5, 512x512 (author's settings). Do not add Lune Flow Shift (it refuses Sol).
- Quality is modest by the author's own account."""

NOTE_IMG2IMG = """Lune img2img: an existing picture re-drawn at partial denoise.

1. Load Image: pick your picture (example.png is the one ComfyUI ships in input/).
2. Upscale Image to 512x512 (Lune's training size), VAE Encode with the Lune VAE.
3. KSampler denoise 0.6: keeps the composition, changes the details (0.3 subtle, 0.8 almost new).
   With denoise < 1 the flow grid is cut exactly as KSampler does (the last steps of a longer grid).
4. euler + simple (or lune_euler + lune_flow), 25 steps, CFG 7.5, shift 2.0."""

NOTE_ADAPTER = """Lune Sampler Adapter + SamplerCustomAdvanced.

Lune Sampler Adapter returns the author's sampler (Euler ODE) AND its sigmas
sigma_i = shift(1 - i/N), ending exactly at 0, with the shift read from the MODEL.
Wire SAMPLER and SIGMAS into SamplerCustomAdvanced; RandomNoise gives the seed,
CFGGuider the CFG (7.5). No KSamplerSelect / BasicScheduler needed.
Use the same graph for SamplerCustom or RES4LYF's SharkSampler."""

NOTE_RES4LYF = """Lune + RES4LYF (ClownsharKSampler_Beta). Needs the RES4LYF node pack
(with ComfyUI 0.3.75: RES4LYF commit a91beac; HEAD needs a newer ComfyUI).

- Load Lune Model already makes the model a flow model (CONST, sigma_max 1): RES4LYF's own
  ModelSamplingAdvanced rejects SD1.5, do not add it.
- eta 0.5, sampler multistep/res_2m, scheduler beta57, 25 steps, CFG 7.5, bongmath on.
- options is left unwired (defaults)."""


def _lune_inputs(g: UiGraph, model=DEFAULT_MODEL, companion=DEFAULT_COMPANION, variant="auto", shift=2.0,
                 positive="a watercolor painting of a lighthouse on a cliff at dusk, soft light") -> tuple[int, int, int]:
    """Loader + positive/negative prompt nodes, laid out like lune_txt2img; returns (loader, pos, neg)."""
    loader = g.add("LuneModelLoader", [model, variant, shift, companion], pos=(20, 380), size=(420, 170),
                   outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], color=LUNE_COLOR)
    pos_ = g.add("CLIPTextEncode", [positive], pos=(470, 20), size=(400, 160), title="Positive",
                 inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")])
    neg = g.add("CLIPTextEncode", [""], pos=(470, 210), size=(400, 120), title="Negative",
                inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")])
    g.connect(loader, 1, pos_, "clip")
    g.connect(loader, 1, neg, "clip")
    return loader, pos_, neg


def _ksampler(g: UiGraph, loader: int, pos_: int, neg: int, latent: int, widgets: list) -> int:
    """A stock KSampler wired to the loader's MODEL, the two prompts and a latent source."""
    ks = g.add("KSampler", widgets, pos=(900, 20), size=(320, 270),
               inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                       ("latent_image", "LATENT")], outputs=[("LATENT", "LATENT")])
    g.connect(loader, 0, ks, "model")
    g.connect(pos_, 0, ks, "positive")
    g.connect(neg, 0, ks, "negative")
    g.connect(latent, 0, ks, "latent_image")
    return ks


def _decode_and_save(g: UiGraph, loader: int, latent_src: tuple[int, int], prefix: str,
                     mult_pos=(900, 320), x: int = 1250) -> None:
    """latent → Lune Latent Multiply (variant default) → VAE Decode → Save Image."""
    mult = g.add("LuneLatentMultiply", ["variant default", 1.0], pos=mult_pos, size=(320, 110),
                 inputs=[("samples", "LATENT"), ("model", "MODEL")],
                 outputs=[("samples", "LATENT"), ("factor", "FLOAT")], color=LUNE_COLOR)
    dec = g.add("VAEDecode", [], pos=(x, 20), size=(220, 50), inputs=[("samples", "LATENT"), ("vae", "VAE")],
                outputs=[("IMAGE", "IMAGE")])
    save = g.add("SaveImage", [prefix], pos=(x, 110), size=(400, 420), inputs=[("images", "IMAGE")])
    g.connect(latent_src[0], latent_src[1], mult, "samples")
    g.connect(loader, 0, mult, "model")
    g.connect(mult, 0, dec, "samples")
    g.connect(loader, 2, dec, "vae")
    g.connect(dec, 0, save, "images")


def lune_flux_txt2img() -> dict:
    return lune_txt2img(variant="lune-flux", sampler="lune_euler", scheduler="lune_flow", note=NOTE_FLUX)


def sol_txt2img() -> dict:
    return lune_txt2img(model=SOL_MODEL, variant="sol", steps=20, cfg=7.5, sampler="lune_euler",
                        scheduler="lune_flow", note=NOTE_SOL)


def lune_img2img(denoise=0.6, steps=25, cfg=7.5, seed=42) -> dict:
    g = UiGraph()
    g.add("Note", [NOTE_IMG2IMG], pos=(20, 20), size=(420, 330), title="Read me")
    loader, pos_, neg = _lune_inputs(g, positive="an oil painting of a lighthouse, thick brush strokes")
    img = g.add("LoadImage", [EXAMPLE_IMAGE, "image"], pos=(20, 720), size=(320, 330),
                outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")])
    scale = g.add("ImageScale", ["lanczos", 512, 512, "center"], pos=(470, 360), size=(320, 130),
                  inputs=[("image", "IMAGE")], outputs=[("IMAGE", "IMAGE")])
    enc = g.add("VAEEncode", [], pos=(470, 520), size=(220, 50), inputs=[("pixels", "IMAGE"), ("vae", "VAE")],
                outputs=[("LATENT", "LATENT")])
    ks = _ksampler(g, loader, pos_, neg, enc, [seed, "fixed", steps, cfg, "euler", "simple", denoise])
    g.connect(img, 0, scale, "image")
    g.connect(scale, 0, enc, "pixels")
    g.connect(loader, 2, enc, "vae")
    _decode_and_save(g, loader, (ks, 0), "lune_img2img")
    return g.to_json()


def lune_sampler_adapter(steps=25, cfg=7.5, seed=42, size=512) -> dict:
    g = UiGraph()
    g.add("Note", [NOTE_ADAPTER], pos=(20, 20), size=(420, 330), title="Read me")
    loader, pos_, neg = _lune_inputs(g, variant="lune-flux")
    latent = g.add("EmptyLatentImage", [size, size, 1], pos=(470, 360), size=(320, 110),
                   outputs=[("LATENT", "LATENT")])
    adapter = g.add("LuneSamplerAdapter", [steps, 1.0], pos=(20, 720), size=(420, 230),
                    inputs=[("model", "MODEL")], outputs=[("SAMPLER", "SAMPLER"), ("SIGMAS", "SIGMAS")],
                    color=LUNE_COLOR)
    noise = g.add("RandomNoise", [seed, "fixed"], pos=(470, 500), size=(320, 90), outputs=[("NOISE", "NOISE")])
    guider = g.add("CFGGuider", [cfg], pos=(470, 620), size=(320, 100),
                   inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
                   outputs=[("GUIDER", "GUIDER")])
    sca = g.add("SamplerCustomAdvanced", [], pos=(900, 20), size=(320, 280),
                inputs=[("noise", "NOISE"), ("guider", "GUIDER"), ("sampler", "SAMPLER"), ("sigmas", "SIGMAS"),
                        ("latent_image", "LATENT")],
                outputs=[("output", "LATENT"), ("denoised_output", "LATENT")])
    g.connect(loader, 0, adapter, "model")
    g.connect(loader, 0, guider, "model")
    g.connect(pos_, 0, guider, "positive")
    g.connect(neg, 0, guider, "negative")
    g.connect(noise, 0, sca, "noise")
    g.connect(guider, 0, sca, "guider")
    g.connect(adapter, 0, sca, "sampler")
    g.connect(adapter, 1, sca, "sigmas")
    g.connect(latent, 0, sca, "latent_image")
    _decode_and_save(g, loader, (sca, 0), "lune_adapter")
    return g.to_json()


def lune_res4lyf(size=512) -> dict:
    g = UiGraph()
    g.add("Note", [NOTE_RES4LYF], pos=(20, 20), size=(420, 330), title="Read me")
    loader, pos_, neg = _lune_inputs(g, variant="lune-flux")
    latent = g.add("EmptyLatentImage", [size, size, 1], pos=(470, 360), size=(320, 110),
                   outputs=[("LATENT", "LATENT")])
    clown = g.add("ClownsharKSampler_Beta", list(RES4LYF_WIDGETS), pos=(900, 20), size=(320, 380),
                  inputs=[("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                          ("latent_image", "LATENT"), ("sigmas", "SIGMAS"), ("guides", "GUIDES"),
                          ("options", "OPTIONS")],
                  outputs=[("output", "LATENT"), ("denoised", "LATENT")])
    g.connect(loader, 0, clown, "model")
    g.connect(pos_, 0, clown, "positive")
    g.connect(neg, 0, clown, "negative")
    g.connect(latent, 0, clown, "latent_image")
    _decode_and_save(g, loader, (clown, 0), "lune_res4lyf", mult_pos=(900, 430))
    return g.to_json()


NOTE_LYRA = """Lune + Lyra (AbstractPhil/vae-lyra): CLIP-L and t5-base fused by Lyra, fed to the SD1.5 UNet.

1. Load Lyra: '[download] AbstractPhil/vae-lyra' fetches model.pt + config.json into
   models/lyra/AbstractPhil_vae-lyra/ (or put them there yourself; then pick that entry).
2. Load CLIP: a t5-base encoder (e.g. t5_base.safetensors in models/text_encoders), type stable_audio.
   Not T5-XXL (Flux/SD3): Lyra was trained on t5-base (768 wide).
3. Lyra Encode for BOTH positive and negative (empty negative goes through Lyra too, as the author does).
   clip-skip must stay off for Lyra: no CLIP Set Last Layer, it was trained on CLIP-L's last layer.
4. mode mean = deterministic; sample = the author's random z (seed). strength 1 = the author's behaviour,
   0 = plain CLIP. T5 sees the prompt without (word:1.2) weights, cut to 77 tokens; past 77 CLIP tokens
   the extra chunks stay plain CLIP.
5. Sampling as usual for Lune-Flux: 25 steps, CFG 7.5, euler + simple, 512x512."""


def lune_lyra(model=DEFAULT_MODEL, companion=DEFAULT_COMPANION, t5_file="t5_base.safetensors", steps=25, cfg=7.5,
              size=512, seed=42,
              positive="a watercolor painting of a lighthouse on a cliff at dusk, soft light") -> dict:
    g = UiGraph()
    g.add("Note", [NOTE_LYRA], pos=(20, 20), size=(420, 360), title="Read me")
    loader = g.add("LuneModelLoader", [model, "lune-flux", 2.0, companion], pos=(20, 410), size=(420, 170),
                   outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], color=LUNE_COLOR)
    t5 = g.add("CLIPLoader", [t5_file, "stable_audio", "default"], pos=(20, 610), size=(420, 110),
               title="Load CLIP (t5-base)", outputs=[("CLIP", "CLIP")])
    lyra = g.add("LyraLoader", ["[download] AbstractPhil/vae-lyra", "default"], pos=(20, 750), size=(420, 90),
                 outputs=[("lyra", "LYRA")], color=LUNE_COLOR)
    encode_inputs = [("clip", "CLIP"), ("t5", "CLIP"), ("lyra", "LYRA")]
    pos_ = g.add("LyraEncode", [positive, "mean", 0, "fixed", 1.0], pos=(470, 20), size=(400, 230), title="Positive",
                 inputs=encode_inputs, outputs=[("CONDITIONING", "CONDITIONING")], color=LUNE_COLOR)
    neg = g.add("LyraEncode", ["", "mean", 0, "fixed", 1.0], pos=(470, 280), size=(400, 200), title="Negative",
                inputs=encode_inputs, outputs=[("CONDITIONING", "CONDITIONING")], color=LUNE_COLOR)
    latent = g.add("EmptyLatentImage", [size, size, 1], pos=(470, 510), size=(320, 110),
                   outputs=[("LATENT", "LATENT")])
    ks = _ksampler(g, loader, pos_, neg, latent, [seed, "fixed", steps, cfg, "euler", "simple", 1.0])
    for enc in (pos_, neg):
        g.connect(loader, 1, enc, "clip")
        g.connect(t5, 0, enc, "t5")
        g.connect(lyra, 0, enc, "lyra")
    _decode_and_save(g, loader, (ks, 0), "lune_lyra")
    return g.to_json()


NOTE_MERGE = """Lune Merge Models: many Lune/SD1.5 checkpoints -> one new checkpoint, then sampled as Lune.

1. Put the checkpoints in models/checkpoints. base_name = theta0; models = one name or glob per line
   (relative to models/checkpoints; the base is skipped if matched).
2. method tgmd = the AstolfoMix-XL recipe: DROP p=0.1 (seeded), TIES-SOUP sign vote, geometric median,
   strength 1.0. ties (density < 1 trims), ties_soup, dare/drop, geometric_median, task_arithmetic too.
3. Memory stays at a few copies of the largest tensor, however many models. Time grows with models x
   passes: each Weiszfeld iteration re-reads every model (lower max_iterations for a faster merge).
4. Writes models/checkpoints/<output_name>.safetensors (recipe in its metadata); an existing file is never
   overwritten: change output_name for the next merge.
5. Lune Flow Shift 2.0 makes the merged SD1.5 sample as rectified flow; euler + simple, 25 steps, CFG 7.5."""


def lune_merge(models="lune_a.safetensors\nlune_b.safetensors", steps=25, cfg=7.5, size=512, seed=42) -> dict:
    g = UiGraph()
    g.add("Note", [NOTE_MERGE], pos=(20, 20), size=(420, 330), title="Read me")
    merge = g.add("LuneMergeModels", ["lune_base.safetensors", models, "tgmd", 1.0, 0.1, 1.0, 0, "fixed", 100,
                                      "lune_merge"], pos=(20, 380), size=(420, 360),
                  outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], color=LUNE_COLOR)
    shift = g.add("LuneShift", [2.0], pos=(20, 770), size=(420, 90), inputs=[("model", "MODEL")],
                  outputs=[("MODEL", "MODEL")], color=LUNE_COLOR)
    pos_ = g.add("CLIPTextEncode", ["a watercolor painting of a lighthouse on a cliff at dusk, soft light"],
                 pos=(470, 20), size=(400, 160), title="Positive", inputs=[("clip", "CLIP")],
                 outputs=[("CONDITIONING", "CONDITIONING")])
    neg = g.add("CLIPTextEncode", [""], pos=(470, 210), size=(400, 120), title="Negative",
                inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")])
    latent = g.add("EmptyLatentImage", [size, size, 1], pos=(470, 360), size=(320, 110),
                   outputs=[("LATENT", "LATENT")])
    g.connect(merge, 0, shift, "model")
    g.connect(merge, 1, pos_, "clip")
    g.connect(merge, 1, neg, "clip")
    ks = _ksampler(g, shift, pos_, neg, latent, [seed, "fixed", steps, cfg, "euler", "simple", 1.0])
    dec = g.add("VAEDecode", [], pos=(1250, 20), size=(220, 50), inputs=[("samples", "LATENT"), ("vae", "VAE")],
                outputs=[("IMAGE", "IMAGE")])
    save = g.add("SaveImage", ["lune_merge"], pos=(1250, 110), size=(400, 420), inputs=[("images", "IMAGE")])
    g.connect(ks, 0, dec, "samples")
    g.connect(merge, 2, dec, "vae")
    g.connect(dec, 0, save, "images")
    return g.to_json()


WORKFLOWS = {
    "lune_txt2img": lune_txt2img,
    "lune_flux_txt2img": lune_flux_txt2img,
    "sol_txt2img": sol_txt2img,
    "lune_img2img": lune_img2img,
    "lune_sampler_adapter": lune_sampler_adapter,
    "lune_res4lyf": lune_res4lyf,
    "lune_lyra": lune_lyra,
    "lune_merge": lune_merge,
}
DEFAULT_WORKFLOW = "lune_txt2img"


def render(name: str) -> str:
    return json.dumps(WORKFLOWS[name](), indent=1) + "\n"


def main() -> None:
    WORKFLOWS_DIR.mkdir(exist_ok=True)
    for name in WORKFLOWS:
        (WORKFLOWS_DIR / f"{name}.json").write_text(render(name))
        write_thumbnail(WORKFLOWS_DIR / f"{name}.jpg", name, WORKFLOWS[name]())


if __name__ == "__main__":
    main()
