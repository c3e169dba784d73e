// One websocket to the gateway: many requests in flight, matched to replies by
// correlation_id; live-query pushes routed by subscription id; after an unexpected close it
// reconnects with exponential backoff (with jitter) while live queries need it, and tells them
// to resubscribe. Requests in flight when the socket drops fail with a retriable
// UnavailableError (the caller decides whether a write is safe to repeat).
import { RequestTimeoutError, UnavailableError, errorFromWire } from "./errors.js";
import type { WsMatch, WsProgress, WsReply, WsRequest } from "./generated/wire.js";
import type { RequestOptions } from "./types.js";

/** The subset of the WHATWG WebSocket this client uses (the browser's, Node's, or `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
}
/** The browser's WebSocket, Node 22's, or the `ws` package's (whose event types are wider,
 *  hence the loose instance type; the socket is used through WebSocketLike). */
export type WebSocketConstructor = new (url: string, protocols: string[]) => object;

export interface ReconnectOptions {
  initialDelayMs?: number;
  maxDelayMs?: number;
}

export interface Subscriber {
  onMatch(frame: WsMatch): void;
  /** The server scanned up to this seq without a match: resume after it. */
  onProgress(frame: WsProgress): void;
  /** The socket is open again: resubscribe (resolves when done, rejects to retry later). */
  onReconnect(): Promise<void>;
  onDisconnect(): void;
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: unknown): void;
}

const OPEN = 1;

export class Socket {
  private ws: WebSocketLike | null = null;
  private opening: Promise<WebSocketLike> | null = null;
  private readonly pending = new Map<string, Pending>();
  private readonly subscribers = new Map<string, Subscriber>();
  private next = 1;
  private closed = false;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private attempt = 0;

  constructor(
    private readonly url: string,
    private readonly token: string | undefined,
    private readonly WebSocketImpl: WebSocketConstructor,
    private readonly defaultTimeoutMs: number,
    private readonly backoff: Required<ReconnectOptions>,
  ) {}

  get connected(): boolean {
    return this.ws !== null && this.ws.readyState === OPEN;
  }

  async request<T>(payload: Omit<WsRequest, "v" | "correlation_id">, opts: RequestOptions = {}): Promise<T> {
    opts.signal?.throwIfAborted();
    const ws = await this.open();
    const id = `c${this.next++}`;
    return new Promise<T>((resolve, reject) => {
      const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
      const finish = (): void => {
        this.pending.delete(id);
        clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = (): void => { finish(); reject(opts.signal?.reason); };
      const timer = setTimeout(() => {
        finish();
        reject(new RequestTimeoutError(`No reply to ${payload.op} within ${timeoutMs} ms`));
      }, timeoutMs);
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      this.pending.set(id, {
        resolve: (v) => { finish(); resolve(v as T); },
        reject: (e) => { finish(); reject(e); },
      });
      try {
        ws.send(JSON.stringify({ v: 1, correlation_id: id, ...payload }));
      } catch (err) { // the socket started closing after open() returned it
        this.pending.get(id)?.reject(new UnavailableError(`Cannot send ${payload.op}: ${String(err)}`));
      }
    });
  }

  subscribe(id: string, sub: Subscriber): void {
    this.subscribers.set(id, sub);
  }

  unsubscribe(id: string): void {
    this.subscribers.delete(id);
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.ws?.close(1000, "client closed");
    this.ws = null;
  }

  private open(): Promise<WebSocketLike> {
    if (this.closed) return Promise.reject(new UnavailableError("The client is closed"));
    if (this.ws !== null && this.ws.readyState === OPEN) return Promise.resolve(this.ws);
    this.opening ??= this.connect().finally(() => { this.opening = null; });
    return this.opening;
  }

  private connect(): Promise<WebSocketLike> {
    return new Promise((resolve, reject) => {
      const protocols = ["streamer.v1", ...(this.token ? [`bearer.${this.token}`] : [])];
      let ws: WebSocketLike;
      try {
        ws = new this.WebSocketImpl(this.url, protocols) as WebSocketLike;
      } catch (err) {
        reject(new UnavailableError(`Cannot open ${this.url}: ${String(err)}`));
        return;
      }
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.ws = ws;
        this.attempt = 0;
        resolve(ws);
      };
      ws.onerror = (ev: unknown) => {
        // Node's `ws` says why (a refused certificate, a 401 for a wrong token); a browser's
        // error event carries no reason.
        const why = (ev as { message?: unknown } | null)?.message;
        if (!opened) reject(new UnavailableError(`Cannot connect to ${this.url}: ${
          typeof why === "string" && why ? why : "refused, or a wrong token"}`));
      };
      ws.onmessage = (ev) => this.onFrame(String(ev.data));
      ws.onclose = (ev) => {
        if (!opened) {
          reject(new UnavailableError(`Cannot connect to ${this.url}: closed with ${ev.code}`));
          return;
        }
        this.onClosed(ws, ev);
      };
    });
  }

  private onFrame(text: string): void {
    const frame = JSON.parse(text) as (WsReply & { event?: undefined }) | WsMatch | WsProgress;
    if (frame.event === "match") {
      this.subscribers.get(frame.subscription)?.onMatch(frame);
      return;
    }
    if (frame.event === "progress") {
      this.subscribers.get(frame.subscription)?.onProgress(frame);
      return;
    }
    const p = this.pending.get(String(frame.correlation_id));
    if (!p) return; // answered after a timeout or an abort
    if (frame.ok) p.resolve(frame.result);
    else p.reject(errorFromWire(frame.error ?? { code: "internal", name: "InternalError", message: "no error in reply", retriable: false }));
  }

  private onClosed(ws: WebSocketLike, ev: { code: number; reason: string }): void {
    if (this.ws === ws) this.ws = null;
    const err = new UnavailableError(`The connection closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`);
    for (const p of [...this.pending.values()]) p.reject(err);
    this.pending.clear();
    for (const s of this.subscribers.values()) s.onDisconnect();
    if (!this.closed && this.subscribers.size > 0) this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.retryTimer !== null || this.closed) return;
    const { initialDelayMs, maxDelayMs } = this.backoff;
    const delay = Math.min(maxDelayMs, initialDelayMs * 2 ** this.attempt) * (0.5 + Math.random() / 2);
    this.attempt++;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.reconnect().catch(() => this.scheduleReconnect());
    }, delay);
  }

  private async reconnect(): Promise<void> {
    if (this.closed || this.subscribers.size === 0) return;
    await this.open();
    await Promise.all([...this.subscribers.values()].map((s) => s.onReconnect()));
  }
}
