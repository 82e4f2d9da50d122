"""ComfyUI-Lune library: file formats, SD1.5 UNet key layouts, variants and sampling math. Never imports comfy."""
