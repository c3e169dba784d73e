// Jest global setup for Chroma's own JS client tests (clients/new-js/packages/chromadb of
// Chroma's repository at chromadb 3.5.0, run by tests/test_chroma_js_repo.py): it starts
// `streamer serve` where Chroma's starts a Chroma server, and hands the tests its address the
// way Chroma's does (DEFAULT_CHROMA_INSTANCE_URL, _HOST, _PORT). STREAMER_SERVE_ARGS picks the
// backend ("--embedded" unless set; the Kafka settings come from the environment).
const { spawn } = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function waitUp(url, child, seconds) {
  const until = Date.now() + seconds * 1000;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`streamer serve exited with ${child.exitCode}`);
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`streamer serve did not answer ${url} in ${seconds} s`);
}

module.exports = async () => {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "streamer-chroma-js-"));
  const args = (process.env.STREAMER_SERVE_ARGS ?? "--embedded").split(" ").filter(Boolean);
  const child = spawn(process.env.STREAMER_PYTHON || "python3",
    ["-m", "streamer", "serve", ...args], {
      cwd: process.env.STREAMER_ROOT,
      env: {
        ...process.env,
        STREAMER_HTTP_PORT: String(port),
        STREAMER_HTTP_ANONYMOUS: "rw", // Chroma's test server has no auth
        STREAMER_ALLOW_RESET: "true", // every test file resets the server first
        STREAMER_DATA_DIR: dataDir,
        STREAMER_FSYNC: "false",
      },
      stdio: ["ignore", "inherit", "inherit"],
    });
  globalThis.__streamerServe = { child, dataDir };
  const url = `http://127.0.0.1:${port}`;
  await waitUp(`${url}/api/v2/heartbeat`, child, 180);
  process.env.DEFAULT_CHROMA_INSTANCE_URL = url;
  process.env.DEFAULT_CHROMA_INSTANCE_HOST = "127.0.0.1";
  process.env.DEFAULT_CHROMA_INSTANCE_PORT = String(port);
};
