// The same data queried from TypeScript and from the Python Kafka client: same ids, same
// distances.
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { client, python, squareImage, unique, wireImage } from "./helpers.mjs";

const c = client();
after(() => c.close());

test("a query's results equal the Python client's (ids and distances)", async () => {
  const name = unique("ts-parity");
  const col = await c.createCollection({ name });
  const colours = { red: [255, 0, 0], green: [0, 200, 0], blue: [0, 0, 255], yellow: [250, 220, 0] };
  const images = Object.values(colours).map((rgb, i) => squareImage(rgb, 64, [8 + i * 2, 40 + i * 4]));
  await col.add({ ids: Object.keys(colours).map((k) => `img-${k}`), images });
  await col.add({ ids: ["t1", "t2", "t3"], documents: ["a red circle", "a blue square", "two small stars"] });
  const texts = ["a red square", "a blue circle"];
  const probe = squareImage([255, 0, 0], 64, [10, 50]);
  const ts = await col.query({ queryTexts: texts, nResults: 7 });
  const tsImage = await col.query({ queryImages: [probe], nResults: 7 });
  const py = await python({ op: "query", collection: name, query_texts: texts, n_results: 7 });
  const pyImage = await python({ op: "query", collection: name, query_images: [wireImage(probe)], n_results: 7 });
  for (const [got, want] of [[ts, py], [tsImage, pyImage]]) {
    assert.deepEqual(got.ids, want.ids);
    got.distances.forEach((row, i) => row.forEach((d, j) => assert.ok(Math.abs(d - want.distances[i][j]) < 1e-5,
      `${got.ids[i][j]}: ${d} vs ${want.distances[i][j]}`)));
  }
  assert.equal(ts.ids[0].length, 7);
  await c.deleteCollection({ name });
});
