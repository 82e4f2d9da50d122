"""Writes the bundled UI-format workflows in workflows/ (run: python -m tools.build_workflows).

A test checks the committed files equal this output, so the JSON never drifts from the node schemas.
"""
from __future__ import annotations

import json
from pathlib import Path

from testbed.ui_workflow import UiGraph

from . import notes_zh
from .model_sources import (INSTAFLOW_ENTRY, LUNE_ENTRY, LUNE_FLUX_ENTRY, LYRA_ENTRY, LYRA_XL_DOWNLOAD, SD15_COMPANION,
                            SD15_COMPANION_ENTRY, SDXL_BASE, SOL_ENTRY, SQCU_ENTRY, T5_BASE, T5XL_DOWNLOAD,
                            ModelSource)
from .thumbnails import write_thumbnail

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"
LUNE_COLOR = ("#2b3a55", "#1f2940")
LUNE_MODEL = LUNE_ENTRY            # the author's training state: the loader's [download] entry
LUNE_FLUX_MODEL = LUNE_FLUX_ENTRY  # the recommended lune-flux checkpoint
DEFAULT_COMPANION = SD15_COMPANION_ENTRY  # clip_vae_from: SD1.5's CLIP and VAE, fetched by the loader
NOTE_TXT2IMG = """Lune (SD1.5 rectified flow) with the stock KSampler.

1. model_name '[download] AbstractPhil/sd15-flow-lune' fetches the author's sd15_flow_lune_e52_s52000.pt
   (10 GB, once; Cancel keeps what arrived, the next run resumes). Or pick your own Lune file:
   models/diffusion_models (diffusers unet/ folder or training .pt) or models/checkpoints (single-file).
   UNet-only files need CLIP+VAE: clip_vae_from '[download] Comfy-Org/stable-diffusion-v1-5-archive'
   fetches SD1.5 into models/checkpoints (or pick any SD1.5 checkpoint you have).
2. Load Lune Model sets flow sampling (shift 2.0; trained 2.0-2.5). No ModelSamplingSD3 needed.
3. Sampler: euler or lune_euler, scheduler simple/normal/beta or lune_flow (the author's grid). Avoid karras,
   exponential, linear_quadratic: they ignore the shift.
4. Author settings: 20-30 steps, CFG 7.5, 512x512, empty negative.
5. Lune Latent Multiply: 'variant default' = auto for lune, 1.0 for lune-flux, and 1.0 when variant auto finds
   no name (the log says so: then pick the variant). Too bright/pixelated? Use fixed and lower the multiplier."""


def lune_txt2img(model=LUNE_MODEL, companion=DEFAULT_COMPANION, variant="auto", steps=25, cfg=7.5, size=512,
                 sampler="euler", scheduler="simple", seed=42, note=NOTE_TXT2IMG,
                 note_zh=notes_zh.NOTE_TXT2IMG_ZH, prefix="lune",
                 positive="a watercolor painting of a lighthouse on a cliff at dusk, soft light") -> dict:
    g = UiGraph()
    _read_me(g, note, note_zh)
    loader, pos_, neg = _lune_inputs(g, model, companion, variant, positive=positive)
    latent = g.add("EmptyLatentImage", [size, size, 1], pos=(470, 360), size=(320, 110),
                   outputs=[("LATENT", "LATENT")])
    ks = _ksampler(g, loader, pos_, neg, latent, [seed, "fixed", steps, cfg, sampler, scheduler, 1.0])
    _decode_and_save(g, loader, (ks, 0), prefix)
    return g.to_json()


# --------------------------------------------------------------------------- more bundled workflows (issue: templates)

# Sol's author publishes one training state per epoch: the [download] entry resolves the newest from the listing.
SOL_MODEL = SOL_ENTRY
EXAMPLE_IMAGE = "example.png"  # the name ComfyUI ships in input/ (the tests copy one into their own input/)
RES4LYF_WIDGETS = [0.5, "multistep/res_2m", "beta57", 25, -1, 1.0, 7.5, 42, "fixed", "standard", True]

NOTE_FLUX = """Lune-Flux (AbstractPhil/sd15-flow-lune-flux): the recommended Lune, sampled as the author does.

1. model_name '[download] AbstractPhil/sd15-flow-lune-flux' fetches the author's UNet into
   models/diffusion_models/AbstractPhil_sd15-flow-lune-flux/; clip_vae_from '[download] Comfy-Org/
   stable-diffusion-v1-5-archive' fetches SD1.5 for CLIP+VAE. Or pick your own files.
2. variant lune-flux (explicit, no guessing), shift 2.0 (trained 2.0-2.5).
3. lune_euler + lune_flow = the author's Euler on sigma_i = shift(1 - i/N), ending exactly at 0.
   euler + simple gives nearly the same grid.
4. 25 steps, CFG 7.5, 512x512, empty negative.
5. No latent multiplier is needed for lune-flux ('variant default' = 1.0)."""

NOTE_SOL = """Sol (AbstractPhil/sd15-flow-matching): NOT rectified flow.

Sol is v-prediction on SD1.5's discrete schedule. Load Lune Model with variant sol installs that
(the shift widget is ignored for sol; the author's default is unshifted).
- model_name '[download] AbstractPhil/sd15-flow-matching' fetches the newest epoch's training state
  the repository lists (the log names it); clip_vae_from fetches SD1.5 for CLIP+VAE.
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


def _read_me(g: UiGraph, text: str, text_zh: str, size=(420, 330)) -> None:
    """The workflow's Note, with its Chinese twin to the left of it."""
    g.add("Note", [text], pos=(20, 20), size=size, title="Read me")
    g.add("Note", [text_zh], pos=(-420, 20), size=(size[0] - 20, size[1]), title="说明")


def _sources(*items: ModelSource | str) -> list[dict]:
    return [m.as_property() for m in items if isinstance(m, ModelSource)]


def _name(item: ModelSource | str) -> str:
    return item.name if isinstance(item, ModelSource) else item


def _lune_loader(g: UiGraph, model: ModelSource | str, companion: ModelSource | str, variant: str, shift: float,
                 pos=(20, 380)) -> int:
    """Load Lune Model with ``[download]`` entries (or file names for a user's own copy); no ``properties.models``:
    the frontend's dialog cannot place these files where the loader reads them, the entries do."""
    return g.add("LuneModelLoader", [_name(model), variant, shift, _name(companion)], pos=pos, size=(420, 170),
                 outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], color=LUNE_COLOR)


def _lune_inputs(g: UiGraph, model=LUNE_FLUX_MODEL, companion=DEFAULT_COMPANION, variant="auto", shift=2.0,
                 positive="a watercolor painting of a lighthouse on a cliff at dusk, soft light",
                 ) -> tuple[int, int, int]:
    """Loader + positive/negative prompt nodes, laid out like lune_txt2img; returns (loader, pos, neg)."""
    loader = _lune_loader(g, model, companion, variant, shift)
    pos_ = g.add("CLIPTextEncode", [positive], pos=(470, 20), size=(400, 160), title="Positive",
                 inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")])
    neg = g.add("CLIPTextEncode", [""], pos=(470, 210), size=(400, 120), title="Negative",
                inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")])
    g.connect(loader, 1, pos_, "clip")
    g.connect(loader, 1, neg, "clip")
    return loader, pos_, neg


def _ksampler(g: UiGraph, loader: int, pos_: int, neg: int, latent: int, widgets: list, pos=(900, 20)) -> int:
    """A stock KSampler wired to the loader's MODEL, the two prompts and a latent source."""
    ks = g.add("KSampler", widgets, pos=pos, size=(320, 270),
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


def _plain_decode_and_save(g: UiGraph, latent_src: tuple[int, int], vae_src: tuple[int, int], prefix: str,
                           x: int = 1250) -> None:
    """latent → VAE Decode (with ``vae_src``) → Save Image, for models that need no Lune latent correction."""
    dec = g.add("VAEDecode", [], pos=(x, 20), size=(220, 50), inputs=[("samples", "LATENT"), ("vae", "VAE")],
                outputs=[("IMAGE", "IMAGE")])
    save = g.add("SaveImage", [prefix], pos=(x, 110), size=(400, 420), inputs=[("images", "IMAGE")])
    g.connect(latent_src[0], latent_src[1], dec, "samples")
    g.connect(vae_src[0], vae_src[1], dec, "vae")
    g.connect(dec, 0, save, "images")


def lune_flux_txt2img() -> dict:
    return lune_txt2img(model=LUNE_FLUX_MODEL, variant="lune-flux", sampler="lune_euler", scheduler="lune_flow",
                        note=NOTE_FLUX, note_zh=notes_zh.NOTE_FLUX_ZH)


def sol_txt2img() -> dict:
    return lune_txt2img(model=SOL_MODEL, variant="sol", steps=20, cfg=7.5, sampler="lune_euler",
                        scheduler="lune_flow", note=NOTE_SOL, note_zh=notes_zh.NOTE_SOL_ZH)


def lune_img2img(denoise=0.6, steps=25, cfg=7.5, seed=42) -> dict:
    g = UiGraph()
    _read_me(g, NOTE_IMG2IMG, notes_zh.NOTE_IMG2IMG_ZH)
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
    _read_me(g, NOTE_ADAPTER, notes_zh.NOTE_ADAPTER_ZH)
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
    _read_me(g, NOTE_RES4LYF, notes_zh.NOTE_RES4LYF_ZH)
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

1. Load Lyra '[download] AbstractPhil/vae-lyra' fetches model.pt + config.json into
   models/lyra/AbstractPhil_vae-lyra/ on the first run (or put them there yourself).
2. Load CLIP: a t5-base encoder, type stable_audio (t5_base.safetensors in models/text_encoders; the
   browser saves google-t5/t5-base's file as model.safetensors: rename it). Not T5-XXL (Flux/SD3):
   Lyra was trained on t5-base (768 wide).
3. Lyra Encode for BOTH positive and negative (empty negative goes through Lyra too, as the author does).
   clip-skip must stay off for Lyra: no CLIP Set Last Layer, it was trained on CLIP-L's last layer.
4. mode mean = deterministic; sample = the author's random z (seed). strength 1 = the author's behaviour,
   0 = plain CLIP. T5 sees the prompt without (word:1.2) weights, cut to 77 tokens; past 77 CLIP tokens
   the extra chunks stay plain CLIP.
5. Sampling as usual for Lune-Flux: 25 steps, CFG 7.5, euler + simple, 512x512."""


def lune_lyra(model=LUNE_FLUX_MODEL, companion=DEFAULT_COMPANION, t5_file=T5_BASE, steps=25, cfg=7.5,
              size=512, seed=42,
              positive="a watercolor painting of a lighthouse on a cliff at dusk, soft light") -> dict:
    g = UiGraph()
    _read_me(g, NOTE_LYRA, notes_zh.NOTE_LYRA_ZH, size=(420, 360))
    loader = _lune_loader(g, model, companion, "lune-flux", 2.0, pos=(20, 410))
    t5 = g.add("CLIPLoader", [_name(t5_file), "stable_audio", "default"], pos=(20, 610), size=(420, 110),
               title="Load CLIP (t5-base)", outputs=[("CLIP", "CLIP")], models=_sources(t5_file))
    lyra = g.add("LyraLoader", [LYRA_ENTRY, "default"], pos=(20, 750), size=(420, 90),
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


# The InstaFlow repositories are 2023 diffusers folders: the [download] entry fetches unet/ in whatever weight
# format the repository holds (.safetensors first, .bin read with weights_only).
INSTAFLOW_MODEL = INSTAFLOW_ENTRY
NOTE_INSTAFLOW = """InstaFlow (gnobitab/InstaFlow): SD1.5 made a one-step / few-step generator by Rectified Flow.
Weights CC-BY-NC-4.0 (non-commercial) + CreativeML Open RAIL-M; code MIT.

1. model_name '[download] XCLiu/instaflow_0_9B_from_sd_1_5 (CC-BY-NC-4.0, non-commercial)' fetches the
   unet/ folder (.safetensors or .bin) into models/diffusion_models/XCLiu_instaflow_0_9B_from_sd_1_5/;
   the 2_rectified_flow_from_sd_1_5 entry fetches 2-Rectified Flow. clip_vae_from fetches SD1.5.
2. variant instaflow (the model outputs x0 - noise, the opposite sign of Lune; auto also finds it from
   the folder name). shift 0 = the variant's trained shift, 1.0 (no shift).
3. InstaFlow-0.9B: 1 step, CFG 1.0 (as here). 2-Rectified Flow: 25 steps (2-8 usable), CFG 1.0-2.0,
   a negative prompt works when CFG > 1.
4. lune_euler + lune_flow = the authors' Euler on sigma_i = 1 - i/N; euler + simple is the same grid."""


def instaflow_txt2img() -> dict:
    g = UiGraph()
    _read_me(g, NOTE_INSTAFLOW, notes_zh.NOTE_INSTAFLOW_ZH)
    loader, pos_, neg = _lune_inputs(g, model=INSTAFLOW_MODEL, variant="instaflow", shift=0.0,
                                     positive="a hyper-realistic photo of a cute cat")
    latent = g.add("EmptyLatentImage", [512, 512, 1], pos=(470, 360), size=(320, 110),
                   outputs=[("LATENT", "LATENT")])
    ks = _ksampler(g, loader, pos_, neg, latent, [42, "fixed", 1, 1.0, "lune_euler", "lune_flow", 1.0])
    _decode_and_save(g, loader, (ks, 0), "instaflow")
    return g.to_json()


# ------------------------------------------------------------------ Lune as a refiner across model families

SDXL_CHECKPOINT = SDXL_BASE
NOTE_SDXL_TO_LUNE = """SDXL composes, Lune refines: two model families joined by Lune Latent Hand-off.

1. Load Checkpoint: your SDXL checkpoint (1024x1024, euler + normal, 25 steps, CFG 7).
2. Lune Latent Hand-off: decodes the SDXL latent with the SDXL VAE, resizes it (scale 0.5: 1024 -> 512 px,
   Lune's training size; always a multiple of 8) and encodes it with the Lune VAE. SDXL and SD1.5 latents
   both have 4 channels but live in different spaces: never wire one straight into the other.
3. Lune KSampler at denoise 0.5: keeps SDXL's composition, redraws the details (0.3 subtle, 0.7 strong).
   Lune settings as usual: euler + simple, shift 2.0, CFG 7.5.
4. Lune Latent Multiply (variant default) before VAE Decode with the Lune VAE."""
NOTE_LUNE_TO_SDXL = """Lune composes, SDXL refines: two model families joined by Lune Latent Hand-off.

1. Load Lune Model: Lune at 512x512 (euler + simple, 25 steps, CFG 7.5, shift 2.0).
2. Lune Latent Multiply BEFORE the hand-off: the hand-off decodes the latent, so it must be corrected first.
3. Lune Latent Hand-off: decodes with the Lune VAE, scale 2.0 (512 -> 1024 px, SDXL's size; always a
   multiple of 8), encodes with the SDXL checkpoint's VAE.
4. SDXL KSampler at denoise 0.4 (0.25 subtle, 0.6 strong), euler + normal, CFG 7; decode with the SDXL VAE."""


def _sdxl_inputs(g: UiGraph, y: int, positive: str) -> tuple[int, int, int]:
    """SDXL Load Checkpoint + its prompts in the row starting at ``y``; returns (loader, pos, neg)."""
    loader = g.add("CheckpointLoaderSimple", [SDXL_CHECKPOINT.name], pos=(20, y), size=(420, 100), title="Load SDXL",
                   outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], models=_sources(SDXL_CHECKPOINT))
    pos_ = g.add("CLIPTextEncode", [positive], pos=(470, y), size=(400, 160), title="SDXL positive",
                 inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")])
    neg = g.add("CLIPTextEncode", [""], pos=(470, y + 190), size=(400, 120), title="SDXL negative",
                inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")])
    g.connect(loader, 1, pos_, "clip")
    g.connect(loader, 1, neg, "clip")
    return loader, pos_, neg


def _handoff(g: UiGraph, latent_src: tuple[int, int], source_loader: int, target_loader: int, scale: float,
             pos: tuple[int, int]) -> int:
    node = g.add("LuneLatentHandoff", [scale, "bicubic"], pos=pos, size=(320, 130),
                 inputs=[("samples", "LATENT"), ("source_vae", "VAE"), ("target_vae", "VAE")],
                 outputs=[("LATENT", "LATENT")], color=LUNE_COLOR)
    g.connect(latent_src[0], latent_src[1], node, "samples")
    g.connect(source_loader, 2, node, "source_vae")
    g.connect(target_loader, 2, node, "target_vae")
    return node


def sdxl_to_lune_refine(seed=42, denoise=0.5,
                        positive="a watercolor painting of a lighthouse on a cliff at dusk, soft light") -> dict:
    g = UiGraph()
    _read_me(g, NOTE_SDXL_TO_LUNE, notes_zh.NOTE_SDXL_TO_LUNE_ZH)
    lune, lune_pos, lune_neg = _lune_inputs(g, variant="lune-flux", positive=positive)
    sdxl, sdxl_pos, sdxl_neg = _sdxl_inputs(g, 620, positive)
    latent = g.add("EmptyLatentImage", [1024, 1024, 1], pos=(470, 360), size=(320, 110),
                   outputs=[("LATENT", "LATENT")])
    base = _ksampler(g, sdxl, sdxl_pos, sdxl_neg, latent, [seed, "fixed", 25, 7.0, "euler", "normal", 1.0])
    handoff = _handoff(g, (base, 0), sdxl, lune, 0.5, pos=(900, 330))
    refine = _ksampler(g, lune, lune_pos, lune_neg, handoff, [seed, "fixed", 25, 7.5, "euler", "simple", denoise],
                       pos=(1250, 20))
    _decode_and_save(g, lune, (refine, 0), "sdxl_lune_refine", mult_pos=(1250, 330), x=1600)
    return g.to_json()


def lune_to_sdxl_refine(seed=42, denoise=0.4,
                        positive="a watercolor painting of a lighthouse on a cliff at dusk, soft light") -> dict:
    g = UiGraph()
    _read_me(g, NOTE_LUNE_TO_SDXL, notes_zh.NOTE_LUNE_TO_SDXL_ZH)
    lune, lune_pos, lune_neg = _lune_inputs(g, variant="lune-flux", positive=positive)
    latent = g.add("EmptyLatentImage", [512, 512, 1], pos=(470, 360), size=(320, 110),
                   outputs=[("LATENT", "LATENT")])
    base = _ksampler(g, lune, lune_pos, lune_neg, latent, [seed, "fixed", 25, 7.5, "euler", "simple", 1.0])
    mult = g.add("LuneLatentMultiply", ["variant default", 1.0], pos=(900, 320), size=(320, 110),
                 inputs=[("samples", "LATENT"), ("model", "MODEL")],
                 outputs=[("samples", "LATENT"), ("factor", "FLOAT")], color=LUNE_COLOR)
    g.connect(base, 0, mult, "samples")
    g.connect(lune, 0, mult, "model")
    sdxl, sdxl_pos, sdxl_neg = _sdxl_inputs(g, 620, positive)
    handoff = _handoff(g, (mult, 0), lune, sdxl, 2.0, pos=(900, 470))
    refine = _ksampler(g, sdxl, sdxl_pos, sdxl_neg, handoff, [seed, "fixed", 20, 7.0, "euler", "normal", denoise],
                       pos=(1250, 20))
    _plain_decode_and_save(g, (refine, 0), (sdxl, 2), "lune_sdxl_refine", x=1600)
    return g.to_json()


# The stock Load Checkpoint cannot fetch SQCU's checkpoint (its file name is only known from the repository
# listing): Load Checkpoint (Lune downloads) resolves the single file and loads it exactly as the stock node does.
SQCU_CHECKPOINT = SQCU_ENTRY
NOTE_DISCRETE = """SDXL v-prediction + zero terminal SNR (SQCU/sd_xl_base_1.0_0.9_16bit_vpred_sqcusnr).

That model was retrained on a schedule ComfyUI cannot know from the file:
v-prediction, scaled_linear betas 0.00085 -> 0.024 (stock: 0.012), rescaled to zero terminal SNR.
Lune Discrete Schedule sets exactly that on the MODEL; the stock ModelSamplingDiscrete node has no beta inputs.
1. Load Checkpoint (Lune downloads) '[download] SQCU/...' fetches the repository's single-file checkpoint
   into models/checkpoints/SQCU_.../ (or pick your own checkpoint); CLIP and VAE come from the file.
2. Lune Discrete Schedule: v_prediction, scaled_linear, 0.00085, 0.024, zero_terminal_snr on
   (the log says what the file was loaded as). timestep_label_shift stays 0.
3. KSampler: euler + simple (= diffusers 'trailing' spacing: the first step is pure noise), 25 steps.
   CFG 5; if colours burn, lower it or add RescaleCFG (0.7) before the KSampler (Lin et al. 2023).
   Avoid heun/dpm2: samplers that lean on sigma_max are reported to collapse on ZTSNR schedules.
4. For other retrained models use the betas of their model card; zero_terminal_snr ONLY if trained with it."""


def sdxl_vpred_ztsnr(checkpoint=SQCU_CHECKPOINT, steps=25, cfg=5.0, size=1024, seed=42,
                     positive="a watercolor painting of a lighthouse on a cliff at dusk, soft light") -> dict:
    """Stock Load Checkpoint → Lune Discrete Schedule (SQCU settings) → KSampler → VAE Decode → Save Image."""
    g = UiGraph()
    _read_me(g, NOTE_DISCRETE, notes_zh.NOTE_DISCRETE_ZH)
    ckpt = g.add("LuneCheckpointLoader", [checkpoint], pos=(20, 380), size=(420, 100),
                 outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], color=LUNE_COLOR)
    sched = g.add("LuneDiscreteSchedule", ["v_prediction", "scaled_linear", 0.00085, 0.024, True, 0.0],
                  pos=(20, 510), size=(420, 200), inputs=[("model", "MODEL")], outputs=[("MODEL", "MODEL")],
                  color=LUNE_COLOR)
    pos_ = g.add("CLIPTextEncode", [positive], pos=(470, 20), size=(400, 160), title="Positive",
                 inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")])
    neg = g.add("CLIPTextEncode", [""], pos=(470, 210), size=(400, 120), title="Negative",
                inputs=[("clip", "CLIP")], outputs=[("CONDITIONING", "CONDITIONING")])
    latent = g.add("EmptyLatentImage", [size, size, 1], pos=(470, 360), size=(320, 110),
                   outputs=[("LATENT", "LATENT")])
    ks = _ksampler(g, sched, pos_, neg, latent, [seed, "fixed", steps, cfg, "euler", "simple", 1.0])
    g.connect(ckpt, 0, sched, "model")
    g.connect(ckpt, 1, pos_, "clip")
    g.connect(ckpt, 1, neg, "clip")
    _plain_decode_and_save(g, (ks, 0), (ckpt, 2), "sdxl_vpred_ztsnr")
    return g.to_json()


NOTE_MERGE = """Lune Merge Models: many Lune/SD1.5 checkpoints -> one new checkpoint, then sampled as Lune.

1. Put the checkpoints in models/checkpoints. base_name = theta0, here SD1.5 (v1-5-pruned-emaonly-fp16:
   the Missing Models dialog offers it); models = one name or glob per line (relative to
   models/checkpoints; the base is skipped if matched), e.g. single-file Lune finetunes.
2. method tgmd = the AstolfoMix-XL recipe: DROP p=0.1 (seeded), TIES-SOUP sign vote, geometric median,
   strength 1.0. ties (density < 1 trims), ties_soup, dare/drop, geometric_median, task_arithmetic too.
3. Memory stays under memory_budget_gib (default 2 GiB) however many models: each model is read once per
   tensor; geometric-median iterations run on an N x N Gram matrix (stop: precision ends them once the
   output dtype cannot change any more). dropout_seed fixes the DROP masks.
4. Writes models/checkpoints/<output_name>.safetensors (recipe in its metadata). Queued again with the
   same recipe, that file is reused (no second merge); another recipe under the same name is refused
   and the file kept: change output_name. clip_vae_from: CLIP/VAE from another checkpoint (UNet-only).
5. Lune Flow Shift 2.0 makes the merged SD1.5 sample as rectified flow; euler + simple, 25 steps, CFG 7.5."""


def lune_merge(models="lune_a.safetensors\nlune_b.safetensors", steps=25, cfg=7.5, size=512, seed=42) -> dict:
    g = UiGraph()
    _read_me(g, NOTE_MERGE, notes_zh.NOTE_MERGE_ZH)
    merge = g.add("LuneMergeModels", [SD15_COMPANION.name, models, "tgmd", 1.0, 0.1, 1.0, 0, 100, "precision",
                                      2.0, "lune_merge", "(from the base)"], pos=(20, 380), size=(420, 360),
                  outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")], color=LUNE_COLOR,
                  models=_sources(SD15_COMPANION))
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
    _plain_decode_and_save(g, (ks, 0), (merge, 2), "lune_merge")
    return g.to_json()


NOTE_SDXL_LYRA = """SDXL + Lyra-XL (AbstractPhil/vae-lyra-xl-adaptive-cantor-illustrious): CLIP-L, CLIP-G and
flan-t5-xl fused by Lyra, fed to the SDXL UNet with the original pooled output.

1. Load Checkpoint: an SDXL checkpoint (sd_xl_base_1.0 here; the model was trained for Illustrious-style
   SDXL models, so an Illustrious checkpoint suits it best).
2. Load Lyra T5-XL: '[download] QQGYLab/ELLA flan-t5-xl' fetches the flan-t5-xl encoder (fp16, 2.95 GB)
   once. Do not load flan-t5-xl with the stock Load CLIP: it reads it as AuraFlow's Pile-T5.
3. Load Lyra: '[download] AbstractPhil/vae-lyra-xl-adaptive-cantor-illustrious' fetches
   weights/lyra_best.safetensors + config.json. The other SDXL Lyras load the same way.
4. Lyra Encode SDXL for BOTH positive and negative. clip_layer auto = what the model was trained on
   (Illustrious: the stock SDXL encode, penultimate layer). strength 1 = the author's output, 0 = plain
   SDXL conditioning. mode mean = deterministic. Past 77 CLIP tokens the extra chunks stay plain CLIP.
5. Sampling as usual for SDXL: 1024x1024, euler + normal, 25 steps, CFG 7."""


def sdxl_lyra(steps=25, cfg=7.0, size=1024, seed=42,
              positive="a watercolor painting of a lighthouse on a cliff at dusk, soft light") -> dict:
    """SDXL Load Checkpoint + Load Lyra T5-XL + Load Lyra (Illustrious) → Lyra Encode SDXL ×2 → KSampler."""
    g = UiGraph()
    _read_me(g, NOTE_SDXL_LYRA, notes_zh.NOTE_SDXL_LYRA_ZH, size=(420, 380))
    ckpt = g.add("CheckpointLoaderSimple", [SDXL_CHECKPOINT.name], pos=(20, 430), size=(420, 100),
                 title="Load SDXL", outputs=[("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
                 models=_sources(SDXL_CHECKPOINT))
    t5 = g.add("LyraT5XLLoader", [T5XL_DOWNLOAD, "default"], pos=(20, 570), size=(420, 90),
               outputs=[("t5", "CLIP")], color=LUNE_COLOR)
    lyra = g.add("LyraLoader", [LYRA_XL_DOWNLOAD, "default"], pos=(20, 700), size=(420, 90),
                 outputs=[("lyra", "LYRA")], color=LUNE_COLOR)
    encode_inputs = [("clip", "CLIP"), ("t5", "CLIP"), ("lyra", "LYRA")]
    pos_ = g.add("LyraEncodeSDXL", [positive, "mean", 0, "fixed", 1.0, "auto"], pos=(470, 20), size=(400, 250),
                 title="Positive", inputs=encode_inputs, outputs=[("CONDITIONING", "CONDITIONING")], color=LUNE_COLOR)
    neg = g.add("LyraEncodeSDXL", ["", "mean", 0, "fixed", 1.0, "auto"], pos=(470, 300), size=(400, 220),
                title="Negative", inputs=encode_inputs, outputs=[("CONDITIONING", "CONDITIONING")], color=LUNE_COLOR)
    latent = g.add("EmptyLatentImage", [size, size, 1], pos=(470, 550), size=(320, 110),
                   outputs=[("LATENT", "LATENT")])
    ks = _ksampler(g, ckpt, pos_, neg, latent, [seed, "fixed", steps, cfg, "euler", "normal", 1.0])
    for enc in (pos_, neg):
        g.connect(ckpt, 1, enc, "clip")
        g.connect(t5, 0, enc, "t5")
        g.connect(lyra, 0, enc, "lyra")
    _plain_decode_and_save(g, (ks, 0), (ckpt, 2), "sdxl_lyra")
    return g.to_json()


WORKFLOWS = {
    "lune_txt2img": lune_txt2img,
    "lune_flux_txt2img": lune_flux_txt2img,
    "sol_txt2img": sol_txt2img,
    "lune_img2img": lune_img2img,
    "lune_sampler_adapter": lune_sampler_adapter,
    "lune_res4lyf": lune_res4lyf,
    "lune_lyra": lune_lyra,
    "instaflow_txt2img": instaflow_txt2img,
    "sdxl_to_lune_refine": sdxl_to_lune_refine,
    "lune_to_sdxl_refine": lune_to_sdxl_refine,
    "sdxl_vpred_ztsnr": sdxl_vpred_ztsnr,
    "lune_merge": lune_merge,
    "sdxl_lyra": sdxl_lyra,
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
