// A live query as an async iterator. It remembers the stream and the last seq it delivered;
// after a reconnect it subscribes again with `resume_after`, and the gateway replays what was
// committed in between, so a threshold query neither loses nor repeats a match. A top-k query
// cannot resume: it subscribes afresh and `initial` holds the new top k.
import { StreamerError } from "./errors.js";
import type { WireQueryResult, WsMatch, WsProgress, WsRequest, WsSubscribed } from "./generated/wire.js";
import { queryResult } from "./results.js";
import type { Socket, Subscriber } from "./socket.js";
import type { LiveField, LiveMatch, QueryResult } from "./types.js";

let counter = 0;

export class LiveQuery implements AsyncIterableIterator<LiveMatch>, Subscriber {
  readonly id: string;
  /** The current top k (top-k mode) once subscribed; replaced after a top-k reconnect. */
  initial: QueryResult<LiveField | "distances"> | null = null;
  /** How many times the socket was re-established under this query. */
  reconnects = 0;
  private stream: string | null = null;
  private lastSeq = -1;
  private readonly buffer: LiveMatch[] = [];
  private readonly waiting: { resolve(r: IteratorResult<LiveMatch>): void; reject(e: unknown): void }[] = [];
  private failure: unknown = null;
  private done = false;
  readonly ready: Promise<void>;

  constructor(private readonly socket: Socket, private readonly frame: Promise<Omit<WsRequest, "v" | "correlation_id">>,
              signal?: AbortSignal) {
    this.id = `live-${Date.now().toString(36)}-${(counter++).toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
    socket.subscribe(this.id, this);
    this.ready = this.send(false);
    this.ready.catch((err) => this.fail(err));
    signal?.addEventListener("abort", () => { void this.return(); }, { once: true });
  }

  private async send(resume: boolean): Promise<void> {
    const frame = await this.frame;
    const resumable = resume && this.stream !== null && frame.threshold !== undefined;
    const reply = await this.socket.request<WsSubscribed>({
      ...frame, op: "subscribe", subscription: this.id,
      ...(resumable ? { stream: this.stream!, resume_after: this.lastSeq } : {}),
    });
    // Another server (a top-k query subscribes anywhere) numbers its records afresh.
    const same = this.stream === null || reply.stream === this.stream;
    this.lastSeq = same ? Math.max(this.lastSeq, reply.seq) : reply.seq;
    this.stream = reply.stream;
    const initial = reply.initial as WireQueryResult | null;
    this.initial = initial === null ? null : queryResult(initial);
  }

  onMatch(frame: WsMatch): void {
    if (this.done || frame.seq <= this.lastSeq) return; // never twice, even if a replay overlaps
    this.lastSeq = frame.seq;
    const m: LiveMatch = { id: frame.id, seq: frame.seq, distance: frame.distance };
    if ("document" in frame) m.document = frame.document ?? null;
    if ("metadata" in frame) m.metadata = frame.metadata ?? null;
    if ("uri" in frame) m.uri = frame.uri ?? null;
    const w = this.waiting.shift();
    if (w) w.resolve({ value: m, done: false });
    else this.buffer.push(m);
  }

  onProgress(frame: WsProgress): void {
    this.lastSeq = Math.max(this.lastSeq, frame.seq);
  }

  onDisconnect(): void {}

  async onReconnect(): Promise<void> {
    if (this.done) return;
    try {
      await this.send(true);
      this.reconnects++;
    } catch (err) {
      if (err instanceof StreamerError && !err.retriable) this.fail(err);
      else throw err; // the socket retries with backoff
    }
  }

  private fail(err: unknown): void {
    if (this.done) return;
    this.failure = err;
    this.finish();
    for (const w of this.waiting.splice(0)) w.reject(err);
  }

  private finish(): void {
    this.done = true;
    this.socket.unsubscribe(this.id);
  }

  next(): Promise<IteratorResult<LiveMatch>> {
    const m = this.buffer.shift();
    if (m) return Promise.resolve({ value: m, done: false });
    if (this.failure !== null) {
      const err = this.failure;
      this.failure = null;
      return Promise.reject(err);
    }
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  /** Unsubscribes (also what `break` in a `for await` calls). */
  async return(): Promise<IteratorResult<LiveMatch>> {
    if (!this.done) {
      this.finish();
      await this.ready.catch(() => undefined); // the server must know the id to drop it
      for (const w of this.waiting.splice(0)) w.resolve({ value: undefined, done: true });
      if (this.socket.connected) {
        await this.socket.request({ op: "unsubscribe", subscription: this.id }).catch(() => undefined);
      }
    }
    return { value: undefined, done: true };
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
