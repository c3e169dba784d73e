// Images to the wire. Pixels (Uint8Array + shape, ImageData, a canvas, an ImageBitmap) travel
// as a uint8 [h, w, 3] array. A Blob/File holds an encoded file (JPEG, PNG, WebP...): its
// bytes travel as they are ({ file }) and the server decodes them under its pixel limit.
import { encodeArray, toBase64 } from "./arrays.js";
import { InvalidArgumentError } from "./errors.js";
function isPixelImage(x) {
    return typeof x === "object" && x !== null && "shape" in x && "data" in x;
}
function isImageData(x) {
    return typeof x === "object" && x !== null && "data" in x && "width" in x && "height" in x
        && x.data instanceof Uint8ClampedArray;
}
function isBlob(x) {
    return typeof Blob !== "undefined" && x instanceof Blob;
}
/** RGBA pixels (canvas, ImageData) without alpha: the model sees RGB. */
function rgbaToRgb({ data, width, height }) {
    const rgb = new Uint8Array(width * height * 3);
    for (let i = 0, j = 0; i < data.length; i += 4, j += 3) {
        rgb[j] = data[i];
        rgb[j + 1] = data[i + 1];
        rgb[j + 2] = data[i + 2];
    }
    return encodeArray("uint8", [height, width, 3], rgb);
}
function fromPixelImage(img) {
    const [h, w, c = 1] = img.shape;
    if (![h, w, c].every((n) => Number.isInteger(n) && n > 0) || ![1, 3, 4].includes(c)
        || img.data.length !== h * w * c) {
        throw new InvalidArgumentError(`Image shape [${img.shape.join(", ")}] does not match ${img.data.length} bytes of uint8 pixels`);
    }
    if (c === 4)
        return rgbaToRgb({ data: img.data, width: w, height: h });
    const data = img.data instanceof Uint8Array ? img.data : new Uint8Array(img.data.buffer, img.data.byteOffset, img.data.length);
    return encodeArray("uint8", img.shape.length === 2 ? [h, w] : [h, w, c], data);
}
function drawablePixels(src) {
    const { width, height } = src;
    let ctx;
    if ("getContext" in src) {
        ctx = src.getContext("2d");
    }
    else {
        const canvas = new OffscreenCanvas(width, height);
        ctx = canvas.getContext("2d");
        ctx?.drawImage(src, 0, 0);
    }
    if (!ctx)
        throw new InvalidArgumentError("Cannot read the pixels of this canvas (no 2d context)");
    return { data: ctx.getImageData(0, 0, width, height).data, width, height };
}
async function fromBlob(blob) {
    return { file: toBase64(new Uint8Array(await blob.arrayBuffer())) };
}
export async function encodeImage(img) {
    if (isBlob(img))
        return fromBlob(img);
    if (isPixelImage(img))
        return fromPixelImage(img);
    if (isImageData(img))
        return rgbaToRgb(img);
    if (typeof img === "object" && img !== null && "width" in img && "height" in img) {
        return rgbaToRgb(drawablePixels(img));
    }
    throw new InvalidArgumentError("Unsupported image: pass ImageData, a canvas, an ImageBitmap, a Blob/File or { data, shape }");
}
