// Typed errors: the classes are generated from schemas/generated/errors.json (Python's
// schemas/errors.py), so `code` and `retriable` mean the same on both sides.
import { ERROR_CLASSES, InternalError, StreamerError } from "./generated/errors.js";
export * from "./generated/errors.js";
/** Rebuilds the error a server sent; an unknown code becomes an InternalError. */
export function errorFromWire(payload) {
    const cls = ERROR_CLASSES[payload.code] ?? InternalError;
    return new cls(payload.message);
}
export function isStreamerError(value) {
    return value instanceof StreamerError;
}
