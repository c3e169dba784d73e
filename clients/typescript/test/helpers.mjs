// Shared by the node --test suites: they run against a real `streamer serve` on the real
// broker, started by tests/test_typescript_client.py, which passes its address in the env.
import { execFile } from "node:child_process";
import net from "node:net";
import { promisify } from "node:util";
import WebSocket from "ws";
import { StreamerClient } from "../dist/index.js";

const run = promisify(execFile);
export const env = {
  url: process.env.STREAMER_URL,
  token: process.env.STREAMER_TOKEN,
  prefix: process.env.STREAMER_PREFIX,
  python: process.env.STREAMER_PYTHON,
  root: process.env.STREAMER_ROOT,
  fixtures: process.env.STREAMER_FIXTURES,
};
if (!env.url || !env.token) throw new Error("run through tests/test_typescript_client.py (needs STREAMER_URL, STREAMER_TOKEN)");

export function client(url = env.url, opts = {}) {
  return new StreamerClient({ url, token: env.token, WebSocket, ...opts });
}

let n = 0;
export const unique = (stem) => `${stem}-${process.pid}-${Date.now().toString(36)}-${n++}`;

/** One call of the Python Kafka client (tests/typescript_peer.py). */
export async function python(cmd) {
  const { stdout } = await run(env.python, ["tests/typescript_peer.py", JSON.stringify({ prefix: env.prefix, ...cmd })],
    { cwd: env.root, maxBuffer: 64 << 20, timeout: 120_000 });
  return JSON.parse(stdout);
}

/** A solid square of `rgb` on black: h x w x 3 uint8 pixels. */
export function squareImage(rgb, size = 64, box = [16, 48]) {
  const data = new Uint8Array(size * size * 3);
  for (let y = box[0]; y < box[1]; y++) for (let x = box[0]; x < box[1]; x++) data.set(rgb, (y * size + x) * 3);
  return { data, shape: [size, size, 3] };
}

export const wireImage = (img) => ({ shape: img.shape, b64: Buffer.from(img.data).toString("base64") });

/** A TCP proxy to the gateway whose connections can be cut, and new ones refused for a while:
 *  a network failure as the client sees it. */
export async function flakyProxy(target) {
  const { hostname, port } = new URL(target);
  const live = new Set();
  let refusing = false;
  const server = net.createServer((down) => {
    if (refusing) { down.destroy(); return; }
    const up = net.connect(Number(port), hostname);
    live.add(down); live.add(up);
    down.pipe(up); up.pipe(down);
    const end = () => { live.delete(down); live.delete(up); down.destroy(); up.destroy(); };
    down.on("error", end); up.on("error", end); down.on("close", end); up.on("close", end);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() { refusing = true; for (const s of live) s.destroy(); live.clear(); },
    restore() { refusing = false; },
    close() { for (const s of live) s.destroy(); return new Promise((r) => server.close(r)); },
  };
}

/** Takes `count` items from an async iterator, within `ms`. */
export async function take(iter, count, ms = 60_000) {
  const out = [];
  const end = Date.now() + ms;
  while (out.length < count) {
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`only ${out.length} of ${count} in ${ms} ms`)), Math.max(1, end - Date.now()));
    });
    try {
      const r = await Promise.race([iter.next(), late]);
      if (r.done) break;
      out.push(r.value);
    } finally {
      clearTimeout(timer);
    }
  }
  return out;
}
