// Chroma's jest.config.ts for clients/new-js/packages/chromadb, with its setup and teardown
// replaced by ours (streamer serve instead of a Chroma server). CHROMA_JS_PACKAGE is that
// folder of a Chroma checkout, with its devDependencies installed.
const path = require("node:path");

const pkg = process.env.CHROMA_JS_PACKAGE;
if (!pkg) throw new Error("set CHROMA_JS_PACKAGE to clients/new-js/packages/chromadb");

module.exports = {
  rootDir: pkg,
  preset: "ts-jest",
  testEnvironment: "jest-environment-node-single-context",
  clearMocks: true,
  testTimeout: 15000,
  testMatch: ["<rootDir>/test/**/*.test.ts"],
  globalSetup: path.join(__dirname, "global-setup.cjs"),
  globalTeardown: path.join(__dirname, "global-teardown.cjs"),
};
