// Live queries: matches for records a Python producer adds; a forced disconnect (the TCP
// connection cut, new ones refused while records keep arriving) loses and repeats nothing.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { client, flakyProxy, python, take, unique } from "./helpers.mjs";

const c = client();
after(() => c.close());

test("a live query receives matches for records a Python producer adds", async () => {
  const name = unique("ts-live");
  const col = await c.createCollection({ name });
  await col.add({ ids: ["seed"], documents: ["a seed"] });
  const live = col.subscribe({ queryTexts: ["a red circle"], threshold: 2.5, include: ["documents", "metadatas"] });
  await live.ready;
  await python({ op: "add", collection: name, ids: ["p1", "p2", "p3"],
    documents: ["a red circle", "a blue square", "a green star"], metadatas: [{ n: 1 }, { n: 2 }, { n: 3 }] });
  const pushed = await take(live, 3);
  // Pushed in commit order: one call's records span partitions, so sort by id to compare.
  assert.ok(pushed[0].seq < pushed[1].seq && pushed[1].seq < pushed[2].seq);
  const got = [...pushed].sort((a, b) => a.id.localeCompare(b.id));
  assert.deepEqual(got.map((m) => m.id), ["p1", "p2", "p3"]);
  assert.deepEqual(got.map((m) => m.metadata), [{ n: 1 }, { n: 2 }, { n: 3 }]);
  assert.ok(got[0].distance < got[1].distance && got[0].document === "a red circle");
  assert.equal("uri" in got[0], false);
  await live.return();
  assert.deepEqual(await live.next(), { value: undefined, done: true });

  // Only close matches pass a tight threshold; `break` in for-await unsubscribes.
  const tight = col.subscribe({ queryTexts: ["a red circle"], threshold: 0.05 });
  await tight.ready;
  await python({ op: "add", collection: name, ids: ["far", "near"], documents: ["a blue square", "a red circle"] });
  for await (const m of tight) {
    assert.equal(m.id, "near");
    break;
  }
  await c.deleteCollection({ name });
});

test("a forced disconnect during a live query loses no match and repeats none", async () => {
  const name = unique("ts-resume");
  const col = await c.createCollection({ name });
  const proxy = await flakyProxy(process.env.STREAMER_URL);
  const flaky = client(proxy.url, { reconnect: { initialDelayMs: 50, maxDelayMs: 400 } });
  try {
    const reference = col.subscribe({ queryTexts: ["a red circle"], threshold: 2.5 });
    const fcol = await flaky.getCollection({ name });
    const live = fcol.subscribe({ queryTexts: ["a red circle"], threshold: 2.5 });
    await Promise.all([reference.ready, live.ready]);
    const docs = (k) => Array.from({ length: 10 }, (_, i) => `record ${k}-${i}`);
    const ids = (k) => docs(k).map((_, i) => `${k}-${i}`);
    await python({ op: "add", collection: name, ids: ids("a"), documents: docs("a") });
    const before = await take(live, 10);
    proxy.cut(); // the socket dies; reconnects are refused while Python keeps producing
    await python({ op: "add", collection: name, ids: ids("b"), documents: docs("b") });
    await col.add({ ids: ids("c"), documents: docs("c") });
    proxy.restore();
    await python({ op: "add", collection: name, ids: ids("d"), documents: docs("d") });
    const afterCut = await take(live, 30);
    const want = await take(reference, 40);
    const seen = [...before, ...afterCut].map((m) => `${m.id}@${m.seq}:${m.distance.toFixed(6)}`);
    assert.deepEqual(seen, want.map((m) => `${m.id}@${m.seq}:${m.distance.toFixed(6)}`));
    assert.equal(new Set(seen).size, 40);
    assert.ok(live.reconnects >= 1, "the client really reconnected");
    await assert.rejects(take(live, 1, 1500), /only 0 of 1/); // and nothing more comes
    await Promise.all([live.return(), reference.return()]);
  } finally {
    flaky.close();
    await proxy.close();
    await c.deleteCollection({ name }).catch(() => undefined);
  }
});
