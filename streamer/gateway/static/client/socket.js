// One websocket to the gateway: many requests in flight, matched to replies by
// correlation_id; live-query pushes routed by subscription id; after an unexpected close it
// reconnects with exponential backoff (with jitter) while live queries need it, and tells them
// to resubscribe. Requests in flight when the socket drops fail with a retriable
// UnavailableError (the caller decides whether a write is safe to repeat).
import { RequestTimeoutError, UnavailableError, errorFromWire } from "./errors.js";
const OPEN = 1;
export class Socket {
    url;
    token;
    WebSocketImpl;
    defaultTimeoutMs;
    backoff;
    ws = null;
    opening = null;
    pending = new Map();
    subscribers = new Map();
    next = 1;
    closed = false;
    retryTimer = null;
    attempt = 0;
    constructor(url, token, WebSocketImpl, defaultTimeoutMs, backoff) {
        this.url = url;
        this.token = token;
        this.WebSocketImpl = WebSocketImpl;
        this.defaultTimeoutMs = defaultTimeoutMs;
        this.backoff = backoff;
    }
    get connected() {
        return this.ws !== null && this.ws.readyState === OPEN;
    }
    async request(payload, opts = {}) {
        opts.signal?.throwIfAborted();
        const ws = await this.open();
        const id = `c${this.next++}`;
        return new Promise((resolve, reject) => {
            const timeoutMs = opts.timeoutMs ?? this.defaultTimeoutMs;
            const finish = () => {
                this.pending.delete(id);
                clearTimeout(timer);
                opts.signal?.removeEventListener("abort", onAbort);
            };
            const onAbort = () => { finish(); reject(opts.signal?.reason); };
            const timer = setTimeout(() => {
                finish();
                reject(new RequestTimeoutError(`No reply to ${payload.op} within ${timeoutMs} ms`));
            }, timeoutMs);
            opts.signal?.addEventListener("abort", onAbort, { once: true });
            this.pending.set(id, {
                resolve: (v) => { finish(); resolve(v); },
                reject: (e) => { finish(); reject(e); },
            });
            try {
                ws.send(JSON.stringify({ v: 1, correlation_id: id, ...payload }));
            }
            catch (err) { // the socket started closing after open() returned it
                this.pending.get(id)?.reject(new UnavailableError(`Cannot send ${payload.op}: ${String(err)}`));
            }
        });
    }
    subscribe(id, sub) {
        this.subscribers.set(id, sub);
    }
    unsubscribe(id) {
        this.subscribers.delete(id);
    }
    close() {
        this.closed = true;
        if (this.retryTimer !== null)
            clearTimeout(this.retryTimer);
        this.ws?.close(1000, "client closed");
        this.ws = null;
    }
    open() {
        if (this.closed)
            return Promise.reject(new UnavailableError("The client is closed"));
        if (this.ws !== null && this.ws.readyState === OPEN)
            return Promise.resolve(this.ws);
        this.opening ??= this.connect().finally(() => { this.opening = null; });
        return this.opening;
    }
    connect() {
        return new Promise((resolve, reject) => {
            const protocols = ["streamer.v1", ...(this.token ? [`bearer.${this.token}`] : [])];
            let ws;
            try {
                ws = new this.WebSocketImpl(this.url, protocols);
            }
            catch (err) {
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
            ws.onerror = (ev) => {
                // Node's `ws` says why (a refused certificate, a 401 for a wrong token); a browser's
                // error event carries no reason.
                const why = ev?.message;
                if (!opened)
                    reject(new UnavailableError(`Cannot connect to ${this.url}: ${typeof why === "string" && why ? why : "refused, or a wrong token"}`));
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
    onFrame(text) {
        const frame = JSON.parse(text);
        if (frame.event === "match") {
            this.subscribers.get(frame.subscription)?.onMatch(frame);
            return;
        }
        if (frame.event === "progress") {
            this.subscribers.get(frame.subscription)?.onProgress(frame);
            return;
        }
        const p = this.pending.get(String(frame.correlation_id));
        if (!p)
            return; // answered after a timeout or an abort
        if (frame.ok)
            p.resolve(frame.result);
        else
            p.reject(errorFromWire(frame.error ?? { code: "internal", name: "InternalError", message: "no error in reply", retriable: false }));
    }
    onClosed(ws, ev) {
        if (this.ws === ws)
            this.ws = null;
        const err = new UnavailableError(`The connection closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`);
        for (const p of [...this.pending.values()])
            p.reject(err);
        this.pending.clear();
        for (const s of this.subscribers.values())
            s.onDisconnect();
        if (!this.closed && this.subscribers.size > 0)
            this.scheduleReconnect();
    }
    scheduleReconnect() {
        if (this.retryTimer !== null || this.closed)
            return;
        const { initialDelayMs, maxDelayMs } = this.backoff;
        const delay = Math.min(maxDelayMs, initialDelayMs * 2 ** this.attempt) * (0.5 + Math.random() / 2);
        this.attempt++;
        this.retryTimer = setTimeout(() => {
            this.retryTimer = null;
            this.reconnect().catch(() => this.scheduleReconnect());
        }, delay);
    }
    async reconnect() {
        if (this.closed || this.subscribers.size === 0)
            return;
        await this.open();
        await Promise.all([...this.subscribers.values()].map((s) => s.onReconnect()));
    }
}
