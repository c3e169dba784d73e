// Chroma's npm JS client (chromadb, pinned in package-lock.json) against `streamer serve`.
// Run by tests/test_chroma_js.py: STREAMER_HOST, STREAMER_PORT and (optionally) STREAMER_TOKEN
// name the server; prints "N passed, 0 failed" and exits 0 when every check holds.
import assert from "node:assert/strict";
import { ChromaClient } from "chromadb";

const token = process.env.STREAMER_TOKEN;
const connect = (headers) => new ChromaClient({
  host: process.env.STREAMER_HOST ?? "127.0.0.1",
  port: Number(process.env.STREAMER_PORT ?? 8000),
  ssl: false,
  headers,
});
const client = connect(token ? { Authorization: `Bearer ${token}` } : {});
const name = `js-${process.pid}-${Date.now()}`;
const ids = ["a", "b", "c", "d"];
const embeddings = [[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.2, 1]];
const documents = ["apple pie", "apple tart", "banana bread", "cherry jam"];
const metadatas = [{ fruit: "apple", n: 1 }, { fruit: "apple", n: 2 },
  { fruit: "banana", n: 3 }, { fruit: "cherry", n: 4 }];
let collection;

const checks = [
  ["heartbeat and version", async () => {
    assert.ok((await client.heartbeat()) > 0);
    assert.match(await client.version(), /^\d+\.\d+\.\d+/);
  }],
  ["a wrong token is refused (401)", async () => {
    const stranger = connect({ Authorization: "Bearer not-a-token" });
    await assert.rejects(stranger.listCollections(), (err) => err.name === "ChromaAuthError"
      || /unauthori[sz]ed/i.test(String(err?.message)));
  }],
  ["createCollection", async () => {
    collection = await client.createCollection({ name, metadata: { owner: "js" },
                                                 embeddingFunction: null });
    assert.equal(collection.name, name);
    assert.deepEqual(collection.metadata, { owner: "js" });
  }],
  ["getOrCreateCollection returns the same collection", async () => {
    const again = await client.getOrCreateCollection({ name, embeddingFunction: null });
    assert.equal(again.id, collection.id);
  }],
  ["add with embeddings, documents, metadatas; count", async () => {
    await collection.add({ ids, embeddings, documents, metadatas });
    assert.equal(await collection.count(), 4);
  }],
  ["query by embeddings: ids and distances in order", async () => {
    const r = await collection.query({ queryEmbeddings: [[1, 0, 0]], nResults: 3,
                                       include: ["documents", "distances", "metadatas"] });
    assert.deepEqual(r.ids, [["a", "b", "c"]]);
    assert.deepEqual(r.documents, [["apple pie", "apple tart", "banana bread"]]);
    const d = r.distances[0];
    assert.ok(Math.abs(d[0]) < 1e-5, `distance to itself ${d[0]}`);
    assert.ok(d[0] <= d[1] && d[1] <= d[2], `distances ascend: ${d}`);
    assert.deepEqual(r.metadatas[0][2], { fruit: "banana", n: 3 });
  }],
  ["query with where", async () => {
    const r = await collection.query({ queryEmbeddings: [[0, 0, 1]], nResults: 4,
                                       where: { fruit: "apple" } });
    assert.deepEqual([...r.ids[0]].sort(), ["a", "b"]);
  }],
  ["get with where", async () => {
    const r = await collection.get({ where: { n: { $gte: 3 } }, include: ["documents", "metadatas"] });
    assert.deepEqual([...r.ids].sort(), ["c", "d"]);
    const docs = Object.fromEntries(r.ids.map((id, i) => [id, r.documents[i]]));
    assert.deepEqual(docs, { c: "banana bread", d: "cherry jam" });
  }],
  ["get by ids with whereDocument and embeddings", async () => {
    const r = await collection.get({ ids: ["a", "c"], whereDocument: { $contains: "apple" },
                                     include: ["embeddings"] });
    assert.deepEqual(r.ids, ["a"]);
    assert.deepEqual(r.embeddings.map((e) => Array.from(e)), [[1, 0, 0]]);
  }],
  ["update", async () => {
    // The client embeds changed documents itself unless embeddings come along.
    await collection.update({ ids: ["c"], embeddings: [[0, 1, 0.1]], documents: ["banana split"],
                              metadatas: [{ fruit: "banana", n: 30 }] });
    const r = await collection.get({ ids: ["c"], include: ["documents", "metadatas"] });
    assert.deepEqual(r.documents, ["banana split"]);
    assert.deepEqual(r.metadatas, [{ fruit: "banana", n: 30 }]);
  }],
  ["upsert", async () => {
    await collection.upsert({ ids: ["d", "e"], embeddings: [[0, 0.2, 1], [0, 1, 1]],
                              documents: ["cherry pie", "elderberry"] });
    assert.equal(await collection.count(), 5);
    const r = await collection.get({ ids: ["d"], include: ["documents"] });
    assert.deepEqual(r.documents, ["cherry pie"]);
  }],
  ["delete by ids and by where; count", async () => {
    await collection.delete({ ids: ["e"] });
    await collection.delete({ where: { fruit: "apple" } });
    assert.equal(await collection.count(), 2);
    const r = await collection.get();
    assert.deepEqual([...r.ids].sort(), ["c", "d"]);
  }],
  ["listCollections and countCollections", async () => {
    const names = (await client.listCollections()).map((c) => c.name);
    assert.ok(names.includes(name), `${name} in ${names}`);
    assert.ok((await client.countCollections()) >= 1);
  }],
  ["getCollection", async () => {
    const c = await client.getCollection({ name });
    assert.equal(c.id, collection.id);
    assert.equal(await c.count(), 2);
  }],
  ["deleteCollection", async () => {
    await client.deleteCollection({ name });
    const names = (await client.listCollections()).map((c) => c.name);
    assert.ok(!names.includes(name));
    await assert.rejects(client.getCollection({ name }));
  }],
];

let passed = 0;
let failed = 0;
for (const [title, run] of checks) {
  try {
    await run();
    passed += 1;
    console.log(`ok - ${title}`);
  } catch (err) {
    failed += 1;
    console.log(`not ok - ${title}\n${err?.stack ?? err}`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed === checks.length ? 0 : 1);
