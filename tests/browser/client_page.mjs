// A page that imports the TypeScript client the gateway serves (/static/client/index.js),
// draws a red circle on a canvas, queries the collection with that canvas (and with the same
// picture as a PNG Blob) and shows the best match (tests/test_search_page.py). The page is served at the gateway's origin through a
// route, so it loads the module as any page on that server would. Prints one JSON line:
//   {"id", "distance", "fileId", "fileDistance", "shape", "b64", "problems"}
//   (b64: the canvas's RGB pixels)
// Usage: node client_page.mjs URL TOKEN COLLECTION PROFILE_DIR SHOT
import { chromium } from "playwright-core";

const [url, token, collection, profile, shot] = process.argv.slice(2);
const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>client page</title><link rel="icon" href="data:,"></head>
<body data-state="loading" data-params="${new URLSearchParams({ token, collection })}">
<canvas id="probe" width="96" height="96"></canvas>
<p id="match"></p>
<script type="module">
import { StreamerClient } from "/static/client/index.js";
const params = new URLSearchParams(document.body.dataset.params);
const canvas = document.getElementById("probe");
const ctx = canvas.getContext("2d");
ctx.fillStyle = "rgb(128, 128, 128)";
ctx.fillRect(0, 0, 96, 96);
ctx.fillStyle = "rgb(220, 30, 30)";
ctx.beginPath();
ctx.arc(48, 48, 28, 0, 2 * Math.PI);
ctx.fill();
try {
  const client = new StreamerClient({ url: location.origin, token: params.get("token") });
  const collection = await client.getCollection({ name: params.get("collection") });
  const result = await collection.query({ queryImages: [canvas], nResults: 3, include: ["distances", "uris"] });
  const p = document.getElementById("match");
  p.dataset.id = result.ids[0][0];
  p.dataset.distance = String(result.distances[0][0]);
  p.textContent = \`best match: \${result.ids[0][0]} (distance \${result.distances[0][0].toFixed(4)})\`;
  // The same picture as an encoded PNG file (a Blob, as a file input or a drop gives).
  const png = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const byFile = await collection.query({ queryImages: [png], nResults: 1 });
  p.dataset.fileId = byFile.ids[0][0];
  p.dataset.fileDistance = String(byFile.distances[0][0]);
  document.body.dataset.state = "done";
} catch (err) {
  document.getElementById("match").textContent = String(err);
  document.body.dataset.state = "error";
}
</script></body></html>`;

const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 400, height: 300 },
});
try {
  const page = context.pages()[0] || await context.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(String(err)));
  page.on("console", (msg) => {
    // The browser asks the JSON document it starts from for /favicon.ico, which is not served.
    if (msg.type() === "error" && !msg.location().url.endsWith("/favicon.ico")) {
      problems.push(`${msg.text()} ${msg.location().url}`);
    }
  });
  await page.goto(`${url}/healthz`);
  await page.setContent(PAGE);
  await page.waitForSelector('body:not([data-state="loading"])', { timeout: 30000 });
  const shown = await page.$eval("#match", (p) => ({
    id: p.dataset.id, distance: Number(p.dataset.distance), text: p.textContent,
    fileId: p.dataset.fileId, fileDistance: Number(p.dataset.fileDistance) }));
  // The pixels the page sent: the canvas as RGB, for the Python side to query with.
  const pixels = await page.evaluate(() => {
    const data = document.getElementById("probe").getContext("2d").getImageData(0, 0, 96, 96).data;
    let s = "";
    for (let i = 0; i < data.length; i += 4) s += String.fromCharCode(data[i], data[i + 1], data[i + 2]);
    return btoa(s);
  });
  await page.screenshot({ path: shot });
  process.stdout.write(JSON.stringify({ ...shown, shape: [96, 96, 3], b64: pixels, problems }) + "\n");
} finally {
  await context.close();
}
