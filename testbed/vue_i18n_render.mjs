// Renders message strings with the vue-i18n build the installed ComfyUI frontend ships (its own message compiler:
// `|` plural branches, `{…}` placeholders, `@:` links), so a test sees what the frontend would show.
//
//   node vue_i18n_render.mjs <module URL> <export name of createI18n>
//   stdin: {"key": "message", …}; stdout: {"rendered": {"key": "rendered" | {"error"}}, "warnings": [...]}
//
// testbed/frontend_rules.py finds the module (1.32: assets/lib/vue-i18n, beside a shim for its bare "vue" import;
// 1.45: the vendor-i18n chunk). Messages are rendered with no parameters, as a tooltip is.
import fs from "fs";

const [moduleUrl, exportName] = process.argv.slice(2);
const messages = JSON.parse(fs.readFileSync(0, "utf8"));
const createI18n = (await import(moduleUrl))[exportName];
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
