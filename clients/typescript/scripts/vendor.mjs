// Copies the built ES modules (dist/**/*.js) to the gateway's static files, where the search
// page and any page on the gateway import them as /static/client/index.js. `--check` fails
// when the copy differs from the build (tests/test_typescript_client.py).
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "..", "dist");
const target = join(here, "..", "..", "..", "streamer", "gateway", "static", "client");

async function files(root, dir = root) {
  const out = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...await files(root, p));
    else if (e.name.endsWith(".js")) out.push(relative(root, p));
  }
  return out.sort();
}

const built = await files(dist);
if (process.argv.includes("--check")) {
  const have = await files(target).catch(() => []);
  const same = have.length === built.length && (await Promise.all(built.map(async (f) =>
    (await readFile(join(dist, f), "utf8")) === (await readFile(join(target, f), "utf8").catch(() => null))))).every(Boolean);
  if (!same || have.join() !== built.join()) {
    console.error("streamer/gateway/static/client/ is stale: run npm run build && npm run vendor");
    process.exit(1);
  }
  console.log("the gateway's copy of the client is up to date");
} else {
  await rm(target, { recursive: true, force: true });
  for (const f of built) {
    await mkdir(dirname(join(target, f)), { recursive: true });
    await writeFile(join(target, f), await readFile(join(dist, f)));
  }
  console.log(`copied ${built.length} modules to ${relative(process.cwd(), target)}`);
}
