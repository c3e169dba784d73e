// Images as encoded files: PNG and JPEG bytes in a Blob travel as they are and are decoded
// server-side; the stored vector is the one of the decoded file (the Python client, given
// the file decoded by Pillow, finds the same ids at the same distances).
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, test } from "node:test";
import { SchemaError, StreamerError } from "../dist/index.js";
import { client, env, python, squareImage, unique } from "./helpers.mjs";

const c = client();
after(() => c.close());
const file = async (name) => new Blob([await readFile(join(env.fixtures, name))]);

test("encoded PNG and JPEG bytes: add, update, query; equal to the decoded file", async () => {
  const name = unique("ts-files");
  const col = await c.createCollection({ name });
  await col.add({ ids: ["png", "jpeg"], images: [await file("red-circle.png"), await file("blue-square.jpg")] });
  await col.add({ ids: ["pixels"], images: [squareImage([0, 200, 0])] });
  const byJpeg = await col.query({ queryImages: [await file("blue-square.jpg")], nResults: 3 });
  assert.equal(byJpeg.ids[0][0], "jpeg");
  assert.ok(byJpeg.distances[0][0] < 1e-4, String(byJpeg.distances[0][0]));
  const byPng = await col.query({ queryImages: [await file("red-circle.png")], nResults: 3 });
  assert.equal(byPng.ids[0][0], "png");
  for (const [got, path] of [[byJpeg, "blue-square.jpg"], [byPng, "red-circle.png"]]) {
    const want = await python({ op: "query", collection: name, n_results: 3,
      query_images: [{ path: join(env.fixtures, path) }] });
    assert.deepEqual(got.ids, want.ids);
    got.distances[0].forEach((d, j) => assert.ok(Math.abs(d - want.distances[0][j]) < 1e-5, `${d} vs ${want.distances[0][j]}`));
  }
  // An update with a file replaces the record's image; a text record becomes an image one.
  await col.add({ ids: ["text"], documents: ["a green triangle"] });
  await col.update({ ids: ["text"], images: [await file("green-triangle.jpg")] });
  const byTriangle = await col.query({ queryImages: [await file("green-triangle.jpg")], nResults: 1, include: ["documents", "distances"] });
  assert.deepEqual(byTriangle.ids, [["text"]]);
  assert.deepEqual(byTriangle.documents, [[null]]);
  const bad = await col.add({ ids: ["junk"], images: [new Blob([new TextEncoder().encode("not an image")])] }).catch((e) => e);
  assert.ok(bad instanceof SchemaError && bad instanceof StreamerError && !bad.retriable, String(bad));
  assert.equal(await col.count(), 4);
  await c.deleteCollection({ name });
});
