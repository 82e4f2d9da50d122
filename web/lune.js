// ComfyUI-Lune frontend extension (served at /extensions/ComfyUI-Lune/lune.js, loaded automatically).
//
// * Every node of this pack gets the pack colour and a small "Lune" tag in its title bar. Which nodes those are
//   comes from the backend's node list (/object_info), never from a list kept here: a node belongs to the pack
//   when its `python_module` is `custom_nodes.<the folder this script is served from>` (ComfyUI names both after
//   the pack's folder), or — for a backend that does not send python_module — when its category starts with
//   "Lune". The names found are exposed as window.__luneNodes (sorted) for tests.
// * LuneShift, LuneModelLoader and LuneSamplerAdapter draw the σ schedule they imply:
//     σ_i = shift(1 − i/N),  shift(σ) = s·σ / (1 + (s − 1)·σ)   (docs/reference.md §1, the author's Euler grid)
//   for the node's shift widget and step count (the steps widget, else 25), against the unshifted line
//   (s = 1). LuneSamplerAdapter reads the shift from the MODEL at run time, so it is drawn at 2.0 (Lune's
//   training shift) and labelled so; a loader set to variant "sol" is drawn unshifted (Sol has no flow shift).
//   A loader whose shift widget is 0 ("the variant's trained shift") is drawn at the chosen variant's default,
//   read from the shift input's `variant_shifts` option in /object_info (sd-flow-alpha, instaflow: 1.0); with
//   variant "auto" the variant is only known at load time, so it is drawn at Lune's default and labelled so.
// * The last plot of each node is exposed as window.__lunePlots[nodeId] = {type, shift, steps, sigmas, label}
//   for tests and for anyone who wants the numbers.
import { app } from "../../scripts/app.js";

// /extensions/<pack folder>/lune.js → <pack folder>
const PACK_FOLDER = decodeURIComponent(new URL(import.meta.url).pathname.split("/").slice(-2, -1)[0] ?? "");
const PACK_MODULE = `custom_nodes.${PACK_FOLDER}`;
const PACK_CATEGORY = "Lune";
const LUNE_NODES = new Set();
window.__luneNodes = [];

/** True for a node definition (an /object_info entry) of this pack. */
export function isPackNode(nodeData) {
  if (typeof nodeData?.python_module === "string") return nodeData.python_module === PACK_MODULE;
  const category = String(nodeData?.category ?? "");
  return category === PACK_CATEGORY || category.startsWith(`${PACK_CATEGORY}/`);
}
const PLOT_NODES = new Set(["LuneShift", "LuneModelLoader", "LuneSamplerAdapter"]);
const COLOR = "#2b3a55";
const BGCOLOR = "#1f2940";
const ACCENT = "#7e9cff";
const GRID = "#5a6380";
const TEXT = "#d8dcf0";
const PLOT_HEIGHT = 120;
const PLOT_MARGIN = 10;
const DEFAULT_STEPS = 25;
const ADAPTER_SHIFT = 2.0;
const SHIFT_FROM_VARIANT = 0;
const AUTO_DRAWN_AS = "lune";

const plots = (window.__lunePlots = window.__lunePlots || {});

/** SD3 / ComfyUI time_snr_shift: σ' = s·σ / (1 + (s − 1)·σ). */
export function shiftSigma(sigma, s) {
  return (s * sigma) / (1 + (s - 1) * sigma);
}

/** The author's grid: N + 1 values σ_i = shift(1 − i/N), from 1 down to exactly 0. */
export function flowSigmas(steps, s) {
  const n = Math.max(1, Math.round(steps));
  const out = [];
  for (let i = 0; i <= n; i++) out.push(shiftSigma(1 - i / n, s));
  return out;
}

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

/** {shift, steps, label} for a plot node from its current widgets. */
function scheduleSettings(node) {
  const stepsWidget = widget(node, "steps");
  const steps = Math.max(1, Math.min(200, Number(stepsWidget?.value) || DEFAULT_STEPS));
  const stepsLabel = stepsWidget ? `${steps} steps` : `${steps} steps (typical)`;
  if (node.comfyClass === "LuneSamplerAdapter" || node.type === "LuneSamplerAdapter") {
    return { shift: ADAPTER_SHIFT, steps, label: `shift ${ADAPTER_SHIFT} (read from MODEL at run), ${steps} steps` };
  }
  if (widget(node, "variant")?.value === "sol") {
    return { shift: 1.0, steps, label: `sol: no flow shift, ${stepsLabel}` };
  }
  const s = Number(widget(node, "shift")?.value);
  if (s === SHIFT_FROM_VARIANT) {
    const variant = widget(node, "variant")?.value ?? AUTO_DRAWN_AS;
    const table = node.constructor?.luneVariantShifts ?? {};
    const known = variant in table;
    const shift = Number(table[known ? variant : AUTO_DRAWN_AS]) || ADAPTER_SHIFT;
    const who = known ? `${variant} default` : `variant default; auto drawn as ${AUTO_DRAWN_AS}`;
    return { shift, steps, label: `shift ${+shift.toFixed(2)} (${who}), ${stepsLabel}` };
  }
  const shift = Number.isFinite(s) && s > 0 ? s : 2.0;
  return { shift, steps, label: `shift ${+shift.toFixed(2)}, ${stepsLabel}` };
}

function recordPlot(node) {
  const { shift, steps, label } = scheduleSettings(node);
  const entry = { type: node.comfyClass || node.type, shift, steps, label, sigmas: flowSigmas(steps, shift) };
  if (node.id != null && node.id !== -1) plots[node.id] = entry;  // -1: not in a graph yet
  return entry;
}

function drawPlot(node, ctx) {
  const entry = recordPlot(node);
  const w = node.size[0] - 2 * PLOT_MARGIN;
  if (w < 40) return;
  const x0 = PLOT_MARGIN;
  const y0 = node.size[1] - PLOT_HEIGHT - PLOT_MARGIN;
  const h = PLOT_HEIGHT;
  const pad = 6;
  const px = (i) => x0 + pad + ((w - 2 * pad) * i) / entry.steps;
  const py = (sigma) => y0 + h - pad - (h - 2 * pad - 14) * sigma;

  ctx.save();
  ctx.fillStyle = "rgba(10, 14, 28, 0.75)";
  ctx.strokeStyle = GRID;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.roundRect ? ctx.roundRect(x0, y0, w, h, 4) : ctx.rect(x0, y0, w, h);
  ctx.fill();
  ctx.stroke();

  // unshifted reference σ = 1 − i/N
  ctx.setLineDash([3, 3]);
  ctx.beginPath();
  ctx.moveTo(px(0), py(1));
  ctx.lineTo(px(entry.steps), py(0));
  ctx.stroke();
  ctx.setLineDash([]);

  // the schedule
  ctx.strokeStyle = ACCENT;
  ctx.lineWidth = 2;
  ctx.beginPath();
  entry.sigmas.forEach((sigma, i) => (i === 0 ? ctx.moveTo(px(i), py(sigma)) : ctx.lineTo(px(i), py(sigma))));
  ctx.stroke();
  ctx.fillStyle = ACCENT;
  if (entry.steps <= 60) {
    entry.sigmas.forEach((sigma, i) => ctx.fillRect(px(i) - 1.5, py(sigma) - 1.5, 3, 3));
  }

  ctx.fillStyle = TEXT;
  ctx.font = "11px sans-serif";
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  ctx.fillText(`σ: ${entry.label}`, x0 + pad, y0 + 3, w - 2 * pad);
  ctx.fillStyle = GRID;
  ctx.textAlign = "left";
  ctx.textBaseline = "bottom";
  ctx.fillText("dashed: shift 1", x0 + pad, y0 + h - 3);
  ctx.restore();
}

function drawTag(node, ctx) {
  if (node.flags?.collapsed) return;
  const titleHeight = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  const text = "Lune";
  ctx.save();
  ctx.font = "bold 10px sans-serif";
  const tw = ctx.measureText(text).width + 10;
  const x = node.size[0] - tw - 8;
  const y = -titleHeight + (titleHeight - 16) / 2;
  ctx.fillStyle = ACCENT;
  ctx.beginPath();
  ctx.roundRect ? ctx.roundRect(x, y, tw, 16, 8) : ctx.rect(x, y, tw, 16);
  ctx.fill();
  ctx.fillStyle = BGCOLOR;
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  ctx.fillText(text, x + tw / 2, y + 8.5);
  ctx.restore();
}

function ensurePlotRoom(node) {
  const min = node.computeSize?.();
  if (min && node.size && node.size[1] < min[1]) node.setSize([Math.max(node.size[0], min[0]), min[1]]);
}

app.registerExtension({
  name: "ComfyUI-Lune.SchedulePlot",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isPackNode(nodeData)) return;
    LUNE_NODES.add(nodeData.name);
    window.__luneNodes = [...LUNE_NODES].sort();
    const hasPlot = PLOT_NODES.has(nodeData.name);

    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const r = onDrawForeground?.apply(this, arguments);
      try {
        drawTag(this, ctx);
        if (hasPlot && !this.flags?.collapsed) drawPlot(this, ctx);
      } catch (err) {
        console.warn("[Lune] schedule plot:", err);
      }
      return r;
    };

    if (!hasPlot) return;
    const shiftOptions = nodeData.input?.required?.shift?.[1];
    if (shiftOptions?.variant_shifts) nodeType.luneVariantShifts = shiftOptions.variant_shifts;

    const computeSize = nodeType.prototype.computeSize;
    nodeType.prototype.computeSize = function () {
      const size = computeSize.apply(this, arguments);
      return [Math.max(size[0], 260), size[1] + PLOT_HEIGHT + 2 * PLOT_MARGIN];
    };

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      for (const w of this.widgets ?? []) {
        if (!["shift", "steps", "variant"].includes(w.name)) continue;
        const callback = w.callback;
        w.callback = (...args) => {
          const out = callback?.apply(w, args);
          recordPlot(this);
          this.setDirtyCanvas?.(true, true);
          return out;
        };
      }
      recordPlot(this);
      ensurePlotRoom(this);
      return r;
    };

    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function () {
      const r = onConfigure?.apply(this, arguments);
      recordPlot(this);
      ensurePlotRoom(this);
      return r;
    };

    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function () {
      delete plots[this.id];
      return onRemoved?.apply(this, arguments);
    };
  },

  nodeCreated(node) {
    if (!LUNE_NODES.has(node.comfyClass)) return;
    if (!node.color) node.color = COLOR;
    if (!node.bgcolor) node.bgcolor = BGCOLOR;
  },
});
