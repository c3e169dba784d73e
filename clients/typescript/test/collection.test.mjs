// Every collection method against `streamer serve` (streamer-tiny model server-side).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  DimensionMismatchError, DuplicateIDError, InvalidArgumentError, NotFoundError, RequestTimeoutError,
  StreamerError, UniqueConstraintError,
} from "../dist/index.js";
import { client, squareImage, unique } from "./helpers.mjs";

const c = client();
const name = unique("ts-coll");
let col;

before(async () => {
  col = await c.createCollection({ name, metadata: { owner: "ts" } });
});
after(async () => {
  await c.deleteCollection({ name }).catch(() => undefined);
  c.close();
});

test("collections: create, get, list, get-or-create, delete", async () => {
  assert.equal(col.name, name);
  assert.deepEqual(col.metadata, { owner: "ts" });
  assert.equal(col.spec.embedding_function.name, "open_clip");
  assert.equal(col.spec.embedding_function.config.model_name, "streamer-tiny");
  const got = await c.getCollection({ name });
  assert.equal(got.id, col.id);
  assert.ok((await c.listCollections()).some((x) => x.id === col.id));
  assert.equal((await c.getOrCreateCollection({ name })).id, col.id);
  const other = unique("ts-tmp");
  await c.createCollection({ name: other, embeddingFunction: null });
  await c.deleteCollection({ name: other });
  await assert.rejects(c.getCollection({ name: other }), NotFoundError);
});

test("add, count, get with include, update, upsert, delete", async () => {
  await col.add({
    ids: ["d1", "d2", "d3"],
    documents: ["a red circle", "a blue square", "a green triangle"],
    metadatas: [{ k: 1 }, { k: 2 }, { k: 3 }],
  });
  await col.add({ ids: ["i1", "i2"], images: [squareImage([255, 0, 0]), squareImage([0, 0, 255])],
    metadatas: [{ k: 4 }, { k: 5 }] });
  assert.equal(await col.count(), 5);

  // Over Kafka one call's records may be applied in two replica polls, so get() lists them
  // in apply order (README, Notes): compare as sets, and paging against that order.
  const all = await col.get();
  assert.deepEqual([...all.ids].sort(), ["d1", "d2", "d3", "i1", "i2"]);
  const docs = Object.fromEntries(all.ids.map((id, i) => [id, all.documents[i]]));
  assert.deepEqual(docs, { d1: "a red circle", d2: "a blue square", d3: "a green triangle", i1: null, i2: null });
  assert.equal(all.embeddings, null);
  const some = await col.get({ where: { k: { $gte: 2 } }, whereDocument: { $contains: "square" },
    include: ["embeddings", "metadatas"] });
  assert.deepEqual(some.ids, ["d2"]);
  assert.equal(some.embeddings[0].length, col.spec.dimension ?? some.embeddings[0].length);
  assert.ok(Math.abs(Math.hypot(...some.embeddings[0]) - 1) < 1e-3);
  assert.equal(some.documents, null);
  assert.deepEqual((await col.get({ limit: 2, offset: 1 })).ids, all.ids.slice(1, 3));

  await col.update({ ids: ["d1"], metadatas: [{ k: 10 }] });
  await col.upsert({ ids: ["d2", "d9"], documents: ["a yellow star", "a white cross"] });
  const changed = await col.get({ ids: ["d1", "d2", "d9"] });
  const byId = Object.fromEntries(changed.ids.map((id, i) => [id, [changed.documents[i], changed.metadatas[i]]]));
  assert.deepEqual(byId, { d1: ["a red circle", { k: 10 }], d2: ["a yellow star", { k: 2 }], d9: ["a white cross", null] });
  // One modality per record: an image replaces d3's text.
  await col.update({ ids: ["d3"], images: [squareImage([0, 255, 0])] });
  assert.deepEqual((await col.get({ ids: ["d3"] })).documents, [null]);

  await col.delete({ ids: ["d9"] });
  await col.delete({ where: { k: 5 } });
  assert.deepEqual((await col.get()).ids.sort(), ["d1", "d2", "d3", "i1"]);
});

test("query by text, image and embedding; results typed by include", async () => {
  const byText = await col.query({ queryTexts: ["a red square", "a yellow star"], nResults: 2 });
  assert.equal(byText.ids.length, 2);
  assert.equal(byText.ids[1][0], "d2");
  assert.ok(byText.distances[0][0] <= byText.distances[0][1]);
  assert.equal(byText.embeddings, null);
  const byImage = await col.query({ queryImages: [squareImage([255, 0, 0])], nResults: 1,
    include: ["distances", "embeddings", "uris"] });
  assert.deepEqual(byImage.ids, [["i1"]]);
  assert.ok(byImage.distances[0][0] < 1e-4);
  const vector = byImage.embeddings[0][0];
  const byVector = await col.query({ queryEmbeddings: [vector], nResults: 1, where: { k: 4 } });
  assert.deepEqual(byVector.ids, [["i1"]]);
  assert.deepEqual(byVector.metadatas, [[{ k: 4 }]]);
});

test("many requests in flight on one socket, answered out of order", async () => {
  const texts = Array.from({ length: 24 }, (_, i) => (i % 2 ? "a red circle" : "a yellow star"));
  const results = await Promise.all(texts.map((t) => col.query({ queryTexts: [t], nResults: 1 })));
  results.forEach((r, i) => assert.equal(r.ids[0][0], i % 2 ? "d1" : "d2"));
  const counts = await Promise.all(Array.from({ length: 16 }, () => col.count()));
  assert.deepEqual(new Set(counts), new Set([4]));
});

test("typed errors for bad input, rebuilt from the wire", async () => {
  const dup = await col.add({ ids: ["x", "x"], documents: ["a", "b"] }).catch((e) => e);
  assert.ok(dup instanceof DuplicateIDError && dup instanceof InvalidArgumentError && dup instanceof StreamerError);
  assert.equal(dup.code, "duplicate_id");
  assert.equal(dup.retriable, false);
  assert.match(dup.message, /Expected IDs to be unique/);
  assert.equal(await col.count(), 4); // a bad call writes nothing
  const dim = await col.add({ ids: ["e"], embeddings: [[1, 2, 3]] }).catch((e) => e);
  assert.ok(dim instanceof InvalidArgumentError, String(dim));
  assert.ok(["dimension_mismatch", "invalid_argument"].includes(dim.code));
  await assert.rejects(col.get({ where: { k: { $near: 1 } } }), InvalidArgumentError);
  await assert.rejects(col.query({ queryTexts: ["a"], nResults: 0 }), (e) => e.code === "invalid_type");
  await assert.rejects(col.query({ queryTexts: ["a"], queryEmbeddings: [[1]] }), InvalidArgumentError);
  await assert.rejects(c.createCollection({ name }), UniqueConstraintError);
  await assert.rejects(c.getCollection({ name: unique("missing") }), NotFoundError);
  await assert.rejects(c.createCollection({ name: unique("bad-ef"), embeddingFunction: { name: "nope" } }),
    (e) => e instanceof StreamerError && !e.retriable);
  await assert.rejects(col.add({ ids: ["p"], images: [{ data: new Uint8Array(5), shape: [2, 2, 3] }] }),
    InvalidArgumentError);
  assert.ok(DimensionMismatchError.prototype instanceof InvalidArgumentError);
});

test("timeouts and aborts", async () => {
  await assert.rejects(col.query({ queryTexts: ["a red circle"], timeoutMs: 1 }),
    (e) => e instanceof RequestTimeoutError && e.retriable && e.code === "timeout");
  const ctl = new AbortController();
  const pending = col.query({ queryTexts: ["a red circle"], signal: ctl.signal });
  ctl.abort();
  await assert.rejects(pending, (e) => e.name === "AbortError");
  await assert.rejects(col.count({ signal: AbortSignal.abort() }), (e) => e.name === "AbortError");
  assert.equal(await col.count(), 4); // the socket is still fine
});

test("search: BM25 and dense ranks fused with Rrf, filtered, selected", async () => {
  const hybrid = unique("ts-hybrid");
  const h = await c.createCollection({ name: hybrid, sparse: { key: "sparse" } });
  try {
    await h.add({
      ids: ["p1", "p2", "p3", "p4"],
      documents: ["the XK-42 valve manual", "a red circle on white", "a blue square",
        "spare parts for the XK-42 pump"],
      metadatas: [{ kind: "manual" }, { kind: "shape" }, { kind: "shape" }, { kind: "parts" }],
    });
    // Text queries: the server embeds them with the collection's functions (BM25, OpenCLIP).
    // A record the sparse Knn does not find (no shared word) gets its default rank.
    const sparse = { $knn: { query: "XK-42", key: "sparse", limit: 10, return_rank: true, default: 1000 } };
    const dense = { $knn: { query: "XK-42", limit: 10, return_rank: true } };
    const rrf = { $mul: [{ $val: -1 }, { $sum: [
      { $div: { left: { $val: 1 }, right: { $sum: [{ $val: 60 }, sparse] } } },
      { $div: { left: { $val: 1 }, right: { $sum: [{ $val: 60 }, dense] } } }] }] };
    const byWords = await h.search({ rank: { $knn: { query: "XK-42", key: "sparse" } },
      limit: { limit: 2 }, select: { keys: ["#document", "#score"] } });
    assert.deepEqual([...byWords.ids[0]].sort(), ["p1", "p4"]);
    assert.ok(byWords.scores[0][0] <= byWords.scores[0][1]);
    assert.deepEqual(byWords.documents[0].map((d) => d.includes("XK-42")), [true, true]);
    const [fused, filtered] = (await h.search([
      { rank: rrf, limit: { limit: 4 }, select: { keys: ["#score"] } },
      { toJSON: () => ({ filter: { kind: "parts" }, rank: sparse, select: { keys: ["kind"] } }) },
    ])).ids;
    assert.equal(fused.length, 4);
    assert.deepEqual([...fused.slice(0, 2)].sort(), ["p1", "p4"]);  // the exact word wins
    assert.deepEqual(filtered, ["p4"]);
  } finally {
    await c.deleteCollection({ name: hybrid });
  }
});
