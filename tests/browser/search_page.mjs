// Drives the gateway's search page in the system Chromium (playwright-core, no browser
// download) for tests/test_search_page.py. Prints one JSON line per step on stdout:
//   {"step":"search","results":[{id,distance,thumb}...]}   after a text search
//   {"step":"live"}                                       live mode is subscribed: ingest now
//   {"step":"pushed","id":...,"rank":n}                   a new match appeared on its own
// Usage: node search_page.mjs URL TOKEN COLLECTION QUERY PROFILE_DIR SHOT1 SHOT2
import { chromium } from "playwright-core";

const [url, token, collection, query, profile, shot1, shot2] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1100, height: 760 },
});
try {
  const page = context.pages()[0] || await context.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(String(err)));
  page.on("console", (msg) => { if (msg.type() === "error") problems.push(msg.text()); });
  const hash = new URLSearchParams({ token, collection });
  await page.goto(`${url}/search#${hash}`);
  await page.waitForSelector('body[data-state="connected"]', { timeout: 20000 });

  await page.fill("#query", query);
  await page.click("#search");
  await page.waitForSelector('body[data-state="done"]', { timeout: 20000 });
  // The best match's thumbnail is really shown, not just listed.
  await page.waitForFunction(() => {
    const img = document.querySelector("#results .result img");
    return img && img.complete && img.naturalWidth > 0;
  }, null, { timeout: 20000 });
  const results = await page.$$eval("#results .result", (items) => items.map((li) => ({
    id: li.dataset.id, distance: Number(li.dataset.distance),
    thumb: Boolean(li.querySelector("img")) })));
  await page.screenshot({ path: shot1, fullPage: true });
  say({ step: "search", results, problems });

  await page.check("#live");
  await page.click("#search");
  await page.waitForSelector('body[data-state="live"]', { timeout: 20000 });
  say({ step: "live" });
  const fresh = await page.waitForSelector("#results .result.new", { timeout: 30000 });
  await page.waitForFunction(() => {
    const img = document.querySelector("#results .result.new img");
    return img && img.complete && img.naturalWidth > 0;
  }, null, { timeout: 20000 });
  const id = await fresh.getAttribute("data-id");
  const rank = await page.$$eval("#results .result", (items, want) =>
    items.findIndex((li) => li.dataset.id === want), id);
  await page.screenshot({ path: shot2, fullPage: true });
  say({ step: "pushed", id, rank, problems });
} finally {
  await context.close();
}
