// Compile-time checks (tsc --noEmit -p tsconfig.test.json): results are typed by `include`.
import WebSocket from "ws";
import { StreamerClient, type LiveMatch, type QueryResult } from "../src/index.js";

export async function typing(): Promise<void> {
  const client = new StreamerClient({ url: "http://127.0.0.1:8765", token: "t", WebSocket });
  const col = await client.createCollection({ name: "typed", dataLoader: { name: "image_loader", config: {} } });
  const byDefault = await col.get();
  const docs: (string | null)[] = byDefault.documents;
  // @ts-expect-error embeddings are not included by default: the field is null
  const noEmbeddings: number[][] = byDefault.embeddings;
  const withEmbeddings = await col.get({ include: ["embeddings"] });
  const rows: number[][] = withEmbeddings.embeddings;
  // @ts-expect-error documents were not asked for
  const noDocs: (string | null)[] = withEmbeddings.documents;
  const q: QueryResult<"distances" | "uris"> = await col.query({ queryTexts: ["x"], include: ["distances", "uris"] });
  const d: number[][] = q.distances;
  // @ts-expect-error metadatas were not asked for
  const noMeta: unknown[] = q.metadatas.length;
  for await (const m of col.subscribe({ queryTexts: ["x"], threshold: 0.3 })) {
    const match: LiveMatch = m;
    void match;
  }
  void [docs, noEmbeddings, rows, noDocs, d, noMeta];
}
