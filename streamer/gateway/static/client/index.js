export { StreamerClient, Collection } from "./client.js";
export { LiveQuery } from "./live.js";
export * from "./errors.js";
