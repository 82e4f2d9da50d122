// Drives the real ComfyUI frontend (served by a running server) in Debian's headless chromium via playwright-core.
// Used by tests/browser/test_frontend.py; prints nothing useful itself: results go to <out_dir>/results.json.
//
//   node frontend.cjs <config.json>
//   config: {url, playwright, chromium, pack, templates: {name: node count}, out_dir, screenshot, final_template,
//            zh: {workflow, screenshot}}
//
// Steps: open the app; for every bundled template open Templates → Extensions → <pack> → card (the real template
// browser), record the graph's node types, the ones LiteGraph does not know and what the frontend reported as missing
// (1.32: the missing-nodes / missing-models dialogs; 1.45: the error toast and the Errors panel it opens); then add a
// LuneShift node, screenshot its area at shift 1 and 3 and read window.__lunePlots; finally
// load one template, add a LuneShift at shift 3 and save the screenshot the README points at; then switch the
// frontend's language to Chinese, reload, load the same workflow and screenshot the translated node titles.
"use strict";
const fs = require("fs");
const path = require("path");

const config = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const { chromium } = require(config.playwright);
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
  "--disable-sync"];

const results = { console: [], pageErrors: [], httpErrors: [], blocked: [], templates: {}, steps: [] };
const step = (s) => results.steps.push(`${new Date().toISOString()} ${s}`);

async function frames(page, n = 3) {
  for (let i = 0; i < n; i++) await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
}

async function openTemplateBrowser(page) {
  // The sidebar's "Templates" button (what Workflow → Browse Templates opens too).
  const button = page.locator(".side-tool-bar-container").getByText("Templates", { exact: true });
  if (await button.count()) {
    await button.first().click();
    results.templateBrowserOpenedBy = results.templateBrowserOpenedBy || "sidebar Templates button";
  } else {
    await page.evaluate(() => window.comfyAPI.app.app.extensionManager.command.execute("Comfy.BrowseTemplates"));
    results.templateBrowserOpenedBy = results.templateBrowserOpenedBy || "command Comfy.BrowseTemplates";
  }
  const nav = page.locator(".p-dialog").getByText(config.pack, { exact: true });
  await nav.first().waitFor({ timeout: 20000 });
  await nav.first().scrollIntoViewIfNeeded();
  await nav.first().click();
}

async function dismissDialogs(page) {
  for (let i = 0; i < 3; i++) {
    if (!(await page.locator(".p-dialog").count())) return;
    await page.keyboard.press("Escape");
    await page.waitForTimeout(300);
  }
}

// Frontend 1.45 reports missing nodes/models in a toast ("N ERRORS", "Show missing models" / "See Errors") whose button
// opens the Errors tab of the properties panel, where 1.32 opened dialogs. Read both, then close them.
async function readErrorPanel(page) {
  const toast = await page.evaluate(() => {
    const head = [...document.querySelectorAll("span")].find((e) => /^\d+ ERRORS?$/.test(e.textContent.trim()));
    let box = head;
    while (box && !/Dismiss/.test(box.innerText)) box = box.parentElement;
    return box ? box.innerText : null;
  });
  if (toast === null) return null;
  const out = { toast, panel: null, downloads: [] };
  const open = page.getByRole("button", { name: /^(See Errors|Show missing models)$/ });
  if (await open.count()) {
    await open.first().click();
    const panel = page.locator('[data-testid="properties-panel"]');
    await panel.first().waitFor({ timeout: 10000 });
    await page.waitForTimeout(800);
    out.panel = await panel.first().innerText();
    out.downloads = await panel.first().locator("button[aria-label]").evaluateAll(
      (bs) => bs.map((b) => b.getAttribute("aria-label")).filter((l) => l.startsWith("Download ")));
    const toggle = page.getByRole("button", { name: "Toggle properties panel" });
    if (await toggle.count()) await toggle.first().click();
  }
  const dismiss = page.getByRole("button", { name: "Dismiss", exact: true });
  if (await dismiss.count()) await dismiss.first().click();
  await page.waitForTimeout(300);
  return out;
}

async function openTemplate(page, name) {
  await page.evaluate(() => window.comfyAPI.app.app.graph.clear());
  await openTemplateBrowser(page);
  const card = page.locator(".p-dialog").getByText(name, { exact: true });
  await card.first().waitFor({ timeout: 20000 });
  await card.first().scrollIntoViewIfNeeded();
  await card.first().click();
  await page.waitForFunction((n) => window.comfyAPI.app.app.graph?.nodes?.length === n,
    config.templates[name], { timeout: 30000 });
  await page.waitForTimeout(1500); // the missing-nodes dialog (or error toast) opens right after the graph is configured
  await frames(page);
  const got = await page.evaluate(() => {
    const app = window.comfyAPI.app.app;
    const types = [...new Set(app.graph.nodes.map((n) => n.type))].sort();
    const missing = types.filter((t) => !(t in window.LiteGraph.registered_node_types)).sort();
    const dialogs = [...document.querySelectorAll(".p-dialog")].map((d) => d.innerText);
    return { types, missing, dialogs, nodeCount: app.graph.nodes.length };
  });
  got.errors = await readErrorPanel(page);
  return got;
}

async function shiftPlotShot(page, nodeId, shift, file) {
  const box = await page.evaluate(([id, s]) => {
    const app = window.comfyAPI.app.app;
    const node = app.graph.getNodeById(id);
    const w = node.widgets.find((x) => x.name === "shift");
    w.value = s;
    w.callback?.(s, app.canvas, node);
    app.graph.setDirtyCanvas(true, true);
    const ds = app.canvas.ds;
    const rect = app.canvas.canvas.getBoundingClientRect();
    const title = window.LiteGraph.NODE_TITLE_HEIGHT;
    return {
      x: rect.left + (node.pos[0] + ds.offset[0]) * ds.scale,
      y: rect.top + (node.pos[1] - title + ds.offset[1]) * ds.scale,
      width: node.size[0] * ds.scale,
      height: (node.size[1] + title) * ds.scale,
    };
  }, [nodeId, shift]);
  await frames(page, 4);
  await page.waitForTimeout(300);
  await page.screenshot({ path: file, clip: box });
  const plot = await page.evaluate((id) => window.__lunePlots?.[id] ?? null, nodeId);
  return { box, plot, file };
}

(async () => {
  const browser = await chromium.launch({ executablePath: config.chromium, headless: true, args: FLAGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    page.on("console", (m) => {
      if (m.type() === "error") results.console.push({ text: m.text(), url: m.location()?.url ?? "" });
    });
    page.on("pageerror", (e) => results.pageErrors.push(`${e.message}\n${e.stack ?? ""}`));
    page.on("response", (r) => { if (r.status() >= 400) results.httpErrors.push(`${r.status()} ${r.url()}`); });
    await page.route("https://api.comfy.org/**", (route) => { results.blocked.push(route.request().url()); return route.abort(); });
    await page.route("**/*", (route) => {
      const url = route.request().url();
      if (url.startsWith(config.url) || url.startsWith("data:") || url.startsWith("blob:")) return route.continue();
      results.blocked.push(url);
      return route.abort();
    });

    const extensionResponse = page.waitForResponse((r) => r.url().includes(`/extensions/${config.pack}/lune.js`),
      { timeout: 60000 });
    step("goto");
    await page.goto(config.url);
    await page.waitForFunction(() => window.comfyAPI?.app?.app?.graph && window.LiteGraph?.registered_node_types?.LuneShift,
      null, { timeout: 90000 });
    results.extensionStatus = (await extensionResponse).status();
    await page.waitForFunction(() => window.__lunePlots !== undefined, null, { timeout: 20000 });
    results.extensionLoaded = true;
    await page.waitForTimeout(1000);
    await dismissDialogs(page);

    for (const name of Object.keys(config.templates)) {
      step(`template ${name}`);
      try {
        results.templates[name] = await openTemplate(page, name);
      } catch (err) {
        results.templates[name] = { error: String(err) };
        await page.screenshot({ path: path.join(config.out_dir, `failed_${name}.png`) });
      }
      await dismissDialogs(page);
    }

    step("variant-default shift plot");
    await openTemplate(page, "instaflow_txt2img");
    await dismissDialogs(page);
    await frames(page);
    results.variantDefaultPlots = await page.evaluate(() => {
      const app = window.comfyAPI.app.app;
      const node = app.graph.nodes.find((n) => n.type === "LuneModelLoader");
      const plot = () => ({ ...window.__lunePlots[node.id], shiftWidget: node.widgets.find((x) => x.name === "shift").value });
      const out = { instaflow: plot() };
      const variant = node.widgets.find((x) => x.name === "variant");
      variant.value = "lune";
      variant.callback?.("lune", app.canvas, node);
      out.lune = plot();
      return out;
    });

    step("schedule plot");
    const nodeId = await page.evaluate(() => {
      const app = window.comfyAPI.app.app;
      app.graph.clear();
      const node = window.LiteGraph.createNode("LuneShift");
      node.pos = [420, 320];
      app.graph.add(node);
      app.canvas.ds.scale = 1;
      app.canvas.ds.offset = [0, 0];
      app.graph.setDirtyCanvas(true, true);
      return node.id;
    });
    await frames(page);
    results.plotNode = await page.evaluate((id) => {
      const node = window.comfyAPI.app.app.graph.getNodeById(id);
      return { color: node.color, bgcolor: node.bgcolor, size: node.size };
    }, nodeId);
    results.shift1 = await shiftPlotShot(page, nodeId, 1.0, path.join(config.out_dir, "plot_shift1.png"));
    results.shift3 = await shiftPlotShot(page, nodeId, 3.0, path.join(config.out_dir, "plot_shift3.png"));

    step("final screenshot");
    await openTemplate(page, config.final_template);
    await dismissDialogs(page);
    await page.evaluate(() => {
      const app = window.comfyAPI.app.app;
      const node = window.LiteGraph.createNode("LuneShift");
      node.pos = [20, 720];
      app.graph.add(node);
      const w = node.widgets.find((x) => x.name === "shift");
      w.value = 3.0;
      w.callback?.(3.0, app.canvas, node);
      app.canvas.ds.scale = 0.75;
      app.canvas.ds.offset = [100, 160];
      app.graph.setDirtyCanvas(true, true);
    });
    await frames(page, 4);
    await page.waitForTimeout(500);
    await page.screenshot({ path: config.screenshot });
    results.finalPlots = await page.evaluate(() => window.__lunePlots);

    if (config.zh) {
      // Switch the frontend to Chinese (Settings → Language) and reload: titles come from locales/zh/nodeDefs.json.
      step("zh locale");
      await dismissDialogs(page);
      await page.evaluate(() => window.comfyAPI.app.app.extensionManager.setting.set("Comfy.Locale", "zh"));
      await page.goto(config.url);  // not reload(): the URL's #<graph id> names an unsaved workflow that is gone
      await page.waitForFunction(() => window.comfyAPI?.app?.app?.graph && window.LiteGraph?.registered_node_types?.LuneShift,
        null, { timeout: 90000 });
      await page.waitForTimeout(1500);
      await dismissDialogs(page);
      const workflow = JSON.parse(fs.readFileSync(config.zh.workflow, "utf8"));
      await page.evaluate(async (wf) => {
        const app = window.comfyAPI.app.app;
        await app.loadGraphData(wf);
        app.canvas.ds.scale = 0.75;
        app.canvas.ds.offset = [100, 160];
        app.graph.setDirtyCanvas(true, true);
      }, workflow);
      await page.waitForTimeout(1500);
      await dismissDialogs(page);
      await frames(page, 4);
      results.zh = await page.evaluate(() => {
        const app = window.comfyAPI.app.app;
        const fresh = window.LiteGraph.createNode("LuneShift");
        return {
          locale: app.extensionManager.setting.get("Comfy.Locale"),
          titles: app.graph.nodes.map((n) => ({ type: n.type, title: n.title })),
          freshLuneShiftTitle: fresh.title,
          luneI18n: window.__luneI18n ?? null,
        };
      });
      await page.screenshot({ path: config.zh.screenshot });
    }
    step("done");
  } catch (err) {
    results.fatal = `${err}\n${err.stack ?? ""}`;
  } finally {
    fs.writeFileSync(path.join(config.out_dir, "results.json"), JSON.stringify(results, null, 1));
    await browser.close();
  }
})();
