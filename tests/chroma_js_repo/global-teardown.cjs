// Stops what global-setup.cjs started.
const fs = require("node:fs");

module.exports = async () => {
  const { child, dataDir } = globalThis.__streamerServe ?? {};
  if (!child) return;
  if (child.exitCode === null) {
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 30000))]);
    if (child.exitCode === null) child.kill("SIGKILL");
  }
  fs.rmSync(dataDir, { recursive: true, force: true });
};
