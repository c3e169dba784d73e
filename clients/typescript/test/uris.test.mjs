// Records by URI: PNG and JPEG photos loaded server-side through the collection's loader
// (its roots), queried by URI and text, and read back with include: ["data"].
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, test } from "node:test";
import { DataLoaderError, URIOutsideRootsError } from "../dist/index.js";
import { client, env, unique } from "./helpers.mjs";

const c = client();
after(() => c.close());

test("uris: add, query by uri and by text, get with data", async () => {
  const name = unique("ts-uris");
  const col = await c.createCollection({ name, dataLoader: { name: "image_loader", config: { roots: [env.fixtures] } } });
  const files = ["red-circle.png", "blue-square.jpg", "green-triangle.jpg"];
  await col.add({ ids: files, uris: files.map((f) => join(env.fixtures, f)), metadatas: files.map((f) => ({ f })) });
  const byUri = await col.query({ queryUris: [join(env.fixtures, "blue-square.jpg")], nResults: 1 });
  assert.deepEqual(byUri.ids, [["blue-square.jpg"]]);
  assert.ok(byUri.distances[0][0] < 1e-4);
  const byText = await col.query({ queryTexts: ["a green triangle"], nResults: 1, include: ["uris", "distances"] });
  assert.deepEqual(byText.ids, [["green-triangle.jpg"]]);
  assert.equal(byText.uris[0][0], join(env.fixtures, "green-triangle.jpg"));
  const withData = await col.get({ ids: ["red-circle.png"], include: ["data", "uris"] });
  const [img] = withData.data;
  assert.deepEqual(img.shape, [480, 640, 3]);
  assert.equal(img.dtype, "uint8");
  assert.equal(img.data.length, 480 * 640 * 3);
  await assert.rejects(col.add({ ids: ["out"], uris: ["/etc/passwd"] }),
    (e) => e instanceof URIOutsideRootsError && e instanceof DataLoaderError && e.code === "uri_outside_roots");
  await c.deleteCollection({ name });
});
