// Opens bundled templates in the real ComfyUI frontend (headless chromium via playwright-core, the same launch flags
// as frontend.cjs) on a server that has none of their models, and records what a user would see about models:
// the dialogs that open (Missing Models rows and their error texts) and, for every pack loader, its model widgets'
// values and whether each value is one of the widget's options. Also records window.__luneNodes (web/lune.js).
//
//   node template_models.cjs <config.json>
//   config: {url, playwright, chromium, pack, templates: {name: node count}, out_dir}
// Results: <out_dir>/template_models.json.
"use strict";
const fs = require("fs");
const path = require("path");

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { chromium } = require(config.playwright);
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
  "--disable-sync"];
const MODEL_WIDGETS = ["model_name", "clip_vae_from", "lyra_name", "ckpt_name", "clip_name"];
const results = { templates: {}, pageErrors: [] };

async function closeDialogs(page) {
  for (let i = 0; i < 3 && (await page.locator(".p-dialog").count()); i++) {
    await page.keyboard.press("Escape");
    await page.waitForTimeout(300);
  }
}

async function openFromTemplateBrowser(page, name) {
  await page.evaluate(() => window.comfyAPI.app.app.graph.clear());
  const button = page.locator(".side-tool-bar-container").getByText("Templates", { exact: true });
  if (await button.count()) await button.first().click();
  else await page.evaluate(() => window.comfyAPI.app.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
  const pack = page.locator(".p-dialog").getByText(config.pack, { exact: true });
  await pack.first().waitFor({ timeout: 20000 });
  await pack.first().click();
  const card = page.locator(".p-dialog").getByText(name, { exact: true });
  await card.first().waitFor({ timeout: 20000 });
  await card.first().scrollIntoViewIfNeeded();
  await card.first().click();
  await page.waitForFunction((n) => window.comfyAPI.app.app.graph?.nodes?.length === n, config.templates[name],
    { timeout: 30000 });
  await page.waitForTimeout(2000); // the Missing Models dialog opens after the graph is configured
  return page.evaluate((widgets) => {
    const app = window.comfyAPI.app.app;
    const loaders = app.graph.nodes.map((n) => ({
      id: n.id, type: n.type,
      widgets: (n.widgets ?? []).filter((w) => widgets.includes(w.name)).map((w) => {
        const values = w.options?.values;
        const options = typeof values === "function" ? values() : values;
        return { name: w.name, value: w.value, listed: Array.isArray(options) ? options.includes(w.value) : null };
      }),
    })).filter((n) => n.widgets.length);
    const dialogs = [...document.querySelectorAll(".p-dialog")].map((d) => d.innerText);
    return { loaders, dialogs };
  }, MODEL_WIDGETS);
}

(async () => {
  const browser = await chromium.launch({ executablePath: config.chromium, headless: true, args: FLAGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    page.on("pageerror", (e) => results.pageErrors.push(String(e.message)));
    await page.route("**/*", (route) => {
      const url = route.request().url();
      if (url.startsWith(config.url) || url.startsWith("data:") || url.startsWith("blob:")) return route.continue();
      return route.abort();
    });
    await page.goto(config.url);
    await page.waitForFunction(() => window.comfyAPI?.app?.app?.graph && window.LiteGraph?.registered_node_types
      && window.__luneNodes?.length, null, { timeout: 90000 });
    await page.waitForTimeout(1000);
    results.luneNodes = await page.evaluate(() => window.__luneNodes);
    results.colours = await page.evaluate((types) => Object.fromEntries(types.map((t) => {
      const node = window.LiteGraph.createNode(t);
      window.comfyAPI.app.app.graph.add(node);
      const out = [node.color ?? null, node.bgcolor ?? null];
      window.comfyAPI.app.app.graph.remove(node);
      return [t, out];
    })), results.luneNodes);
    await closeDialogs(page);
    for (const name of Object.keys(config.templates)) {
      try {
        results.templates[name] = await openFromTemplateBrowser(page, name);
      } catch (err) {
        results.templates[name] = { error: String(err) };
        await page.screenshot({ path: path.join(config.out_dir, `template_models_failed_${name}.png`) });
      }
      await closeDialogs(page);
    }
  } catch (err) {
    results.fatal = String(err && err.stack ? err.stack : err);
  } finally {
    fs.writeFileSync(path.join(config.out_dir, "template_models.json"), JSON.stringify(results, null, 1));
    await browser.close();
  }
})();
