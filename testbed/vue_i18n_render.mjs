// Renders message strings with the vue-i18n build the installed ComfyUI frontend ships (its own message compiler:
// `|` plural branches, `{…}` placeholders, `@:` links), so a test sees what the frontend would show.
//
//   node vue_i18n_render.mjs <work dir>    (stdin: {"key": "message", …}; stdout: {"key": "rendered" | {"error"}})
//
// <work dir> holds vi.mjs (the frontend's vue-i18n module) and node_modules/vue (re-exporting the frontend's vue):
// testbed/frontend_rules.py prepares it. Messages are rendered with no parameters, as a tooltip is.
import fs from "fs";
import path from "path";
import { pathToFileURL } from "url";

const dir = process.argv[2];
const messages = JSON.parse(fs.readFileSync(0, "utf8"));
const { createI18n } = await import(pathToFileURL(path.join(dir, "vi.mjs")).href);
const warnings = [];
console.warn = (...a) => warnings.push(a.join(" "));
const i18n = createI18n({ legacy: false, locale: "en", messages: { en: messages }, missingWarn: false,
  fallbackWarn: false, warnHtmlMessage: false });
const out = {};
for (const key of Object.keys(messages)) {
  try {
    out[key] = i18n.global.t(key);
  } catch (e) {
    out[key] = { error: String(e?.message ?? e) };
  }
}
process.stdout.write(JSON.stringify({ rendered: out, warnings }));
