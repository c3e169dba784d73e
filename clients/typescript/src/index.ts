export { StreamerClient, Collection } from "./client.js";
export type { StreamerClientOptions, CreateCollectionParams } from "./client.js";
export { LiveQuery } from "./live.js";
export type { WebSocketConstructor, WebSocketLike, ReconnectOptions } from "./socket.js";
export * from "./errors.js";
export type * from "./types.js";
export type * as wire from "./generated/wire.js";
