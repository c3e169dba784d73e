// Text-query latency and concurrent throughput through the TypeScript client (Node, `ws`)
// against a running gateway; prints a table.
//   node bench/queries.mjs URL TOKEN [--records 2000] [--queries 200] [--concurrency 16]
import { parseArgs } from "node:util";
import WebSocket from "ws";
import { StreamerClient } from "../dist/index.js";

const { values, positionals } = parseArgs({ allowPositionals: true, options: {
  records: { type: "string", default: "2000" }, queries: { type: "string", default: "200" },
  concurrency: { type: "string", default: "16" } } });
const [url, token] = positionals;
const records = Number(values.records), queries = Number(values.queries), concurrency = Number(values.concurrency);
const WORDS = ["red", "blue", "green", "yellow", "purple", "white", "circle", "square", "triangle", "star", "small", "large"];
const text = (i) => `a ${WORDS[i % 6]} ${WORDS[6 + ((i * 7) % 4)]}, ${WORDS[10 + (i % 2)]}`;
const pct = (xs, p) => xs.slice().sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

const client = new StreamerClient({ url, token, WebSocket, timeoutMs: 120_000 });
const name = `bench-ts-${Date.now().toString(36)}`;
const col = await client.createCollection({ name });
for (let i = 0; i < records; i += 500) {
  const ids = Array.from({ length: Math.min(500, records - i) }, (_, k) => `r${i + k}`);
  await col.add({ ids, documents: ids.map((_, k) => text(i + k)) });
}
await col.query({ queryTexts: [text(1)], nResults: 10 }); // warm the model
const latencies = [];
for (let i = 0; i < queries / 2; i++) {
  const t = performance.now();
  await col.query({ queryTexts: [text(i)], nResults: 10 });
  latencies.push(performance.now() - t);
}
let next = 0;
const t0 = performance.now();
await Promise.all(Array.from({ length: concurrency }, async () => {
  while (next < queries) { next++; await col.query({ queryTexts: [text(next)], nResults: 10 }); }
}));
const qps = queries / ((performance.now() - t0) / 1000);
await client.deleteCollection({ name });
client.close();
console.log(`records ${records}, node ${process.version}`);
console.log("| path | text p50 ms | text p99 ms | sequential q/s | concurrent q/s (" + concurrency + " in flight) |");
console.log("|---|---|---|---|---|");
console.log(`| TypeScript client (ws) | ${pct(latencies, 50).toFixed(1)} | ${pct(latencies, 99).toFixed(1)} | `
  + `${(1000 / (latencies.reduce((a, b) => a + b, 0) / latencies.length)).toFixed(1)} | ${qps.toFixed(1)} |`);
