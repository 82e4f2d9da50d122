// ComfyUI-Lune: keep the pack's translations (locales/<lang>/*.json, served by ComfyUI at /i18n) in a non-English UI.
//
// Frontend 1.32 merges every pack's translations once at start-up, then loads the chosen language's own messages
// lazily with setLocaleMessage — which replaces that language's messages, pack translations included. So with
// Settings → Language = 中文, pack node titles and tooltips fall back to English (later frontends, 1.45 among them,
// merge the pack translations again after the lazy load: ComfyUI_frontend pull request 7214). This extension waits
// until the frontend has finished loading the language, looks whether our entries are still there and, only when the
// frontend dropped them, merges the pack's entries for it again (only ours: node ids that start with "Lune"/"Lyra",
// our node category and our template category); when the language changes later it does the same and refreshes the
// node definitions so titles follow. English needs nothing. If the frontend changes so that none of this is
// reachable, it does nothing. window.__luneI18n lists the languages it checked and those it had to merge.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PACK = "ComfyUI-Lune";
const CATEGORY = "Lune";
const OUR_NODE = /^(Lune|Lyra)/;
const WAIT_MS = 10000;

function frontendI18n() {
  const vue = document.querySelector("#vue-app")?.__vue_app__;
  const key = vue?.__VUE_I18N_SYMBOL__;
  const i18n = key ? vue._context?.provides?.[key]?.global : null;
  return typeof i18n?.mergeLocaleMessage === "function" ? i18n : null;
}

function currentLocale(i18n) {
  return typeof i18n.locale === "string" ? i18n.locale : i18n.locale?.value;
}

function wantedLocale() {
  return app.extensionManager?.setting?.get?.("Comfy.Locale") || currentLocale(frontendI18n() ?? {}) || "en";
}

/** Our part of one language's /i18n messages. */
function ours(messages) {
  const out = {};
  const defs = Object.fromEntries(Object.entries(messages?.nodeDefs ?? {}).filter(([id]) => OUR_NODE.test(id)));
  if (Object.keys(defs).length) out.nodeDefs = defs;
  const category = messages?.nodeCategories?.[CATEGORY];
  if (category) out.nodeCategories = { [CATEGORY]: category };
  const template = messages?.templateWorkflows?.category?.[PACK];
  if (template) out.templateWorkflows = { category: { [PACK]: template } };
  return out;
}

let packMessages = null;
async function packTranslations() {
  if (!packMessages) packMessages = await (await api.fetchApi("/i18n")).json();
  return packMessages;
}

/** True when every node title of ours is in the frontend's messages for `locale` (nothing was dropped). */
function kept(i18n, locale, mine) {
  const have = typeof i18n.getLocaleMessage === "function" ? i18n.getLocaleMessage(locale)?.nodeDefs : null;
  return Object.entries(mine.nodeDefs ?? {}).every(([id, def]) => !def.display_name
    || have?.[id]?.display_name === def.display_name);
}

/** Merge our messages for the frontend's current language when it dropped them; true when something was merged. */
async function restore(i18n) {
  const locale = currentLocale(i18n);
  if (!locale || locale === "en") return false;
  const mine = ours((await packTranslations())[locale]);
  if (!Object.keys(mine).length) return false;
  window.__luneI18n.checked.push(locale);
  if (kept(i18n, locale, mine)) return false;
  i18n.mergeLocaleMessage(locale, mine);
  window.__luneI18n.merged.push(locale);
  return true;
}

async function untilLocaleLoaded(i18n, locale) {
  const start = Date.now();
  while (currentLocale(i18n) !== locale && Date.now() - start < WAIT_MS) {
    await new Promise((r) => setTimeout(r, 100));
  }
  return currentLocale(i18n) === locale;
}

app.registerExtension({
  name: "ComfyUI-Lune.i18n",
  // init runs before the node definitions are registered: titles are translated from the start.
  async init() {
    window.__luneI18n = { checked: [], merged: [] };
    const i18n = frontendI18n();
    if (!i18n) return;
    try {
      if (await untilLocaleLoaded(i18n, wantedLocale())) await restore(i18n);
    } catch (err) {
      console.warn("[Lune] could not restore the pack's translations:", err);
    }
    let merged = currentLocale(i18n);
    setInterval(async () => {  // a later change in Settings → Language
      const now = currentLocale(i18n);
      if (now === merged) return;
      merged = now;
      if (await restore(i18n)) await app.extensionManager?.command?.execute?.("Comfy.RefreshNodeDefinitions");
    }, 1000);
  },
});
