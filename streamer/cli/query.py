"""``streamer query``, ``streamer collections`` and ``streamer stats``: read commands that
print tables; ``query --html`` also writes a page with inline thumbnails."""

from __future__ import annotations

import argparse
import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from consumers.embedding.embed import OpenCLIPEmbeddingFunction
from consumers.loading.load import ImageLoader, uri_to_path
from streamer.cli.common import (
    UsageError,
    add_store_args,
    describe_model,
    get_collection,
    open_client,
    print_table,
)


def _read_image(path: str) -> np.ndarray[Any, Any]:
    try:
        with PILImage.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, PILImage.DecompressionBombError) as exc:
        raise UsageError(f"--image {path}: not a readable image ({exc})") from None


def run_query(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.image is None):
        raise UsageError('give a query text or --image FILE (one of them)')
    if args.n < 1:
        raise UsageError("-n must be at least 1")
    image = None if args.image is None else _read_image(args.image)
    with open_client(args, must_exist=True) as client:
        col = get_collection(client, args.collection)
        inputs: dict[str, Any] = {"query_texts": [args.text]} if image is None \
            else {"query_images": [image]}
        res = col.query(**inputs, n_results=args.n,
                        include=["distances", "documents", "uris", "metadatas"])
    hits = [{"id": i, "distance": d, "uri": u, "document": doc}
            for i, d, u, doc in zip(res["ids"][0], res["distances"][0], res["uris"][0],
                                    res["documents"][0])]
    if not hits:
        print(f"collection {args.collection!r} is empty")
    else:
        print_table(["#", "id", "distance", "uri / document"],
                    [(n, h["id"], f"{h['distance']:.4f}",
                      h["uri"] or " ".join((h["document"] or "").split())) for n, h in enumerate(hits, 1)],
                    align="rlrl")
    if args.html:
        query = args.text if image is None else f"image {args.image}"
        Path(args.html).write_text(_page(args.collection, query, image, hits), encoding="utf-8")
        print(f"wrote {args.html}")
    return 0


def _thumbnail(image: np.ndarray[Any, Any] | None, uri: str | None) -> str:
    """A data: URL of a small PNG, or "" when the file cannot be read here."""
    try:
        if image is not None:
            img = PILImage.fromarray(image)
        elif uri is not None:
            with PILImage.open(uri_to_path(uri)) as src:
                img = src.convert("RGB")
        else:
            return ""
        img.thumbnail((160, 160))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
    except Exception:  # a page without one thumbnail beats no page
        return ""
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _page(collection: str, query: str, image: np.ndarray[Any, Any] | None,
          hits: list[dict[str, Any]]) -> str:
    def card(h: dict[str, Any], n: int) -> str:
        thumb = _thumbnail(None, h["uri"])
        media = f'<img src="{thumb}" alt="">' if thumb else \
            f'<p class="doc">{html.escape(h["document"] or h["uri"] or "")}</p>'
        return (f'<figure>{media}<figcaption><b>{n}.</b> {html.escape(h["id"])}<br>'
                f'<span>distance {h["distance"]:.4f}</span></figcaption></figure>')

    q_thumb = _thumbnail(image, None)
    head = f'<img class="q" src="{q_thumb}" alt="">' if q_thumb else ""
    cards = "\n".join(card(h, n) for n, h in enumerate(hits, 1))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>streamer query: {html.escape(query)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
main {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
figure {{ width: 180px; margin: 0; padding: .5rem; border: 1px solid #ddd; border-radius: 8px; }}
figure img {{ width: 160px; height: 160px; object-fit: contain; background: #f4f4f4; }}
.doc {{ height: 160px; overflow: hidden; font-size: .85rem; }}
figcaption {{ font-size: .8rem; word-break: break-all; }} figcaption span {{ color: #666; }}
img.q {{ width: 96px; vertical-align: middle; margin-right: 1rem; }}
</style></head>
<body><h1>{head}{html.escape(query)}</h1>
<p>collection <b>{html.escape(collection)}</b>, {len(hits)} nearest</p>
<main>
{cards}
</main></body></html>
"""


def run_collections(args: argparse.Namespace) -> int:
    with open_client(args, must_exist=True) as client:
        cols = client.list_collections()
        rows = [(c.name, c.count(), describe_model(c.embedding_function), _loader(c.data_loader))
                for c in cols]
    if not rows:
        print("no collections")
        return 0
    print_table(["name", "records", "model", "images from"], rows, align="lrll")
    return 0


def _loader(loader: Any) -> str:
    if isinstance(loader, ImageLoader):
        return "anywhere" if loader.roots is None else ", ".join(map(str, loader.roots))
    return "-" if loader is None else type(loader).__name__


def run_stats(args: argparse.Namespace) -> int:
    with open_client(args, must_exist=True) as client:
        col = get_collection(client, args.collection)
        count = col.count()
        peek = col.peek(limit=1)
        meta = col.metadata or {}
        rows = [("name", col.name), ("id", col.id), ("records", count),
                ("dimension", len(peek["embeddings"][0]) if count else "-"),
                ("space", col.configuration_json["hnsw"]["space"]),
                ("index dtype", meta.get("streamer:dtype", "f32")),
                ("model", describe_model(col.embedding_function)),
                ("embedding", _embedding(col.embedding_function)),
                ("images from", _loader(col.data_loader)),
                ("metadata", meta or "-")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    return 0


def _embedding(ef: Any) -> str:
    """The runtime policy the spec records, as this machine resolves it (consumers/embedding/backends)."""
    if not isinstance(ef, OpenCLIPEmbeddingFunction):
        return "-"
    from consumers.embedding.backends import policy

    return policy(ef.backend, ef.precision, ef.device)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("query", help="search a collection by text or by an image",
                       description="Print the nearest records of a collection to a text or an "
                                   "image: id, distance, and its URI or document.")
    p.add_argument("text", nargs="?", help="query text, e.g. 'a red circle'")
    p.add_argument("--image", metavar="FILE", help="query by this image instead of a text")
    p.add_argument("--collection", "-c", required=True, metavar="NAME")
    p.add_argument("-n", type=int, default=5, metavar="N", help="number of results (default: 5)")
    p.add_argument("--html", metavar="OUT.html", help="also write a page with thumbnails")
    add_store_args(p)
    p.set_defaults(func=run_query)
    p = sub.add_parser("collections", help="list collections",
                       description="List collections: records, model and where images load from.")
    add_store_args(p)
    p.set_defaults(func=run_collections)
    p = sub.add_parser("stats", help="describe one collection",
                       description="Show one collection's size, dimension, space, model and loader.")
    p.add_argument("collection", metavar="NAME")
    add_store_args(p)
    p.set_defaults(func=run_stats)
