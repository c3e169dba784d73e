"""``ImageLoader``: paths and ``file://`` URIs to uint8 RGB arrays, concurrent loads, confinement
to its roots, size limits, and a refused URI writing nothing through a collection."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

import streamer
from streamer.data_loaders import ImageLoader
from streamer.errors import (
    DataLoaderError,
    LimitExceededError,
    URINotAllowedError,
    URIOutsideRootsError,
)
from tests.helpers import HashEmbedding, random_image, write_png


def smooth_image(h: int = 32, w: int = 48) -> np.ndarray:
    """A gradient, which JPEG keeps close to the original (noise it would not)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // (w - 1), y * 255 // (h - 1), (x + y) * 255 // (h + w - 2)],
                    axis=-1).astype(np.uint8)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def outside(tmp_path: Path) -> str:
    """An image that exists and is readable, outside the root."""
    return write_png(tmp_path / "secret.png", random_image(99))


def test_png_round_trip_is_exact(root: Path) -> None:
    img = random_image(1, size=17)
    path = write_png(root / "a.png", img)
    (got,) = ImageLoader()([path])
    assert isinstance(got, np.ndarray) and got.dtype == np.uint8 and got.shape == (17, 17, 3)
    np.testing.assert_array_equal(got, img)


def test_jpeg_loads_as_rgb(root: Path) -> None:
    img = smooth_image()
    Image.fromarray(img).save(root / "a.jpg", quality=95)
    (got,) = ImageLoader()([str(root / "a.jpg")])
    assert got is not None and got.dtype == np.uint8 and got.shape == img.shape
    assert np.abs(got.astype(int) - img.astype(int)).mean() < 3


def test_greyscale_and_rgba_become_rgb(root: Path) -> None:
    grey = random_image(2)[:, :, 0]
    rgba = np.dstack([random_image(3), np.full((24, 24), 7, np.uint8)])
    paths = [write_png(root / "g.png", grey), write_png(root / "rgba.png", rgba)]
    g, c = ImageLoader()(paths)
    assert g is not None and c is not None
    np.testing.assert_array_equal(g, np.stack([grey] * 3, axis=-1))
    np.testing.assert_array_equal(c, rgba[:, :, :3])


def test_file_uris(root: Path) -> None:
    img = random_image(4)
    path = Path(write_png(root / "with space %.png", img))
    loader = ImageLoader(roots=[root])
    for uri in (path.as_uri(), f"file://{quote(str(path))}", f"file://localhost{quote(str(path))}"):
        (got,) = loader([uri])
        np.testing.assert_array_equal(got, img, err_msg=uri)
    with pytest.raises(DataLoaderError, match="Only local file:// URIs"):
        loader([f"file://example.com{quote(str(path))}"])
    with pytest.raises(DataLoaderError, match="Unsupported URI scheme"):
        loader(["ftp://example.com/a.png"])
    with pytest.raises(URINotAllowedError, match="Remote URIs are off"):  # until allowed
        loader(["https://example.com/a.png"])


def test_many_loads_run_concurrently_and_keep_order(root: Path) -> None:
    images = [random_image(10 + i, size=8 + i % 5) for i in range(40)]
    uris = [write_png(root / f"{i}.png", im) for i, im in enumerate(images)]
    uris[7] = Path(uris[7]).as_uri()
    barrier = threading.Barrier(4, timeout=10)

    class Gated(ImageLoader):
        """The first four loads wait for each other: one at a time would time out."""

        def _load(self, uri: str | None) -> np.ndarray | None:
            if uri in uris[:4]:
                barrier.wait()
            return super()._load(uri)

    got = Gated(max_workers=4)([*uris, None])
    assert got[-1] is None  # None passes through, as Chroma's loader protocol allows
    assert len(got) == len(images) + 1
    for want, have in zip(images, got):
        np.testing.assert_array_equal(have, want)


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "file_uri", "file_uri_dotdot",
                                 "symlinked_dir"])
def test_uris_outside_the_roots_are_refused(root: Path, outside: str, how: str) -> None:
    (root / "sub").mkdir()
    (root / "link.png").symlink_to(outside)
    (root / "linked_dir").symlink_to(Path(outside).parent)
    uri = {
        "dotdot": str(root / "sub" / ".." / ".." / "secret.png"),
        "absolute": outside,
        "symlink": str(root / "link.png"),
        "file_uri": Path(outside).as_uri(),
        "file_uri_dotdot": f"file://{root}/%2e%2e/secret.png",
        "symlinked_dir": str(root / "linked_dir" / "secret.png"),
    }[how]
    assert ImageLoader()([uri])[0] is not None  # readable without roots
    loader = ImageLoader(roots=[root])
    with pytest.raises(URIOutsideRootsError) as info:
        loader([uri])
    assert uri in str(info.value)
    assert isinstance(info.value, DataLoaderError)
    with pytest.raises(URIOutsideRootsError):
        loader.resolve(uri)


def test_inside_the_roots_is_allowed(root: Path, tmp_path: Path) -> None:
    img = random_image(5)
    (root / "sub").mkdir()
    path = write_png(root / "sub" / "in.png", img)
    other_root = tmp_path / "other"
    other_root.mkdir()
    other = write_png(other_root / "o.png", img)
    (root / "inner-link.png").symlink_to(path)  # a symlink that stays inside is fine
    loader = ImageLoader(roots=[root, other_root])
    uris = [path, str(root / "sub" / ".." / "sub" / "in.png"), str(root / "inner-link.png"),
            other, Path(other).as_uri()]
    for got in loader(uris):
        np.testing.assert_array_equal(got, img)
    # A sibling whose name merely starts with the root's is not under it.
    sibling = tmp_path / "root-evil"
    sibling.mkdir()
    evil = write_png(sibling / "e.png", img)
    with pytest.raises(URIOutsideRootsError, match="root-evil"):
        loader([evil])


def test_nul_byte_is_refused(root: Path) -> None:
    path = write_png(root / "a.png", random_image(6))
    for uri in (path + "\x00.txt", "file://" + path + "\x00"):
        with pytest.raises(DataLoaderError, match="NUL byte") as info:
            ImageLoader(roots=[root])([uri])
        assert repr(uri) in str(info.value)


def test_missing_and_unreadable_files(root: Path) -> None:
    loader = ImageLoader(roots=[root])
    missing = str(root / "missing.png")
    with pytest.raises(DataLoaderError, match=r"missing\.png") as info:
        loader([missing])
    assert not isinstance(info.value, URIOutsideRootsError)
    (root / "not-an-image.png").write_bytes(b"this is not a png")
    with pytest.raises(DataLoaderError, match=r"not-an-image\.png"):
        loader([str(root / "not-an-image.png")])
    (root / "sub").mkdir()
    with pytest.raises(DataLoaderError, match="sub"):
        loader([str(root / "sub")])



@pytest.mark.parametrize("rooted", [False, True])
def test_symlink_loop_is_a_data_loader_error(root: Path, rooted: bool) -> None:
    (root / "loop.png").symlink_to(root / "loop.png")
    loader = ImageLoader(roots=[root] if rooted else None)
    with pytest.raises(DataLoaderError, match=r"loop\.png"):
        loader([str(root / "loop.png")])

def test_size_limits(root: Path) -> None:
    path = write_png(root / "big.png", random_image(7, size=40))
    size = Path(path).stat().st_size
    assert ImageLoader(max_bytes=size, max_pixels=1600)([path])[0] is not None  # limits inclusive
    with pytest.raises(LimitExceededError, match=rf"big\.png is {size} bytes, over the limit of {size - 1}"):
        ImageLoader(max_bytes=size - 1)([path])
    with pytest.raises(LimitExceededError, match=r"big\.png has 1600 pixels, over the limit of 1599"):
        ImageLoader(max_pixels=1599)([path])


def test_config_round_trips(root: Path) -> None:
    loader = ImageLoader(max_workers=3, roots=[root], max_pixels=10, max_bytes=20)
    config = loader.get_config()
    assert config == {"max_workers": 3, "roots": [str(root.resolve())], "max_pixels": 10,
                      "max_bytes": 20}
    assert ImageLoader.build_from_config(config) == loader
    assert ImageLoader.build_from_config({**config, "roots": None}) != loader


def test_collection_add_outside_the_roots_writes_nothing(root: Path, outside: str,
                                                         tmp_path: Path) -> None:
    inside = write_png(root / "in.png", random_image(8))
    with streamer.Client(tmp_path / "store") as client:
        col = client.create_collection("rooted", embedding_function=HashEmbedding(),
                                       data_loader=ImageLoader(roots=[root]))
        col.add(ids=["in"], uris=[inside])
        assert col.count() == 1
        for ids, uris in ((["bad"], [outside]), (["ok", "bad"], [inside, outside]),
                          (["bad"], [str(root / ".." / "secret.png")])):
            with pytest.raises(URIOutsideRootsError, match="outside the data loader's roots"):
                col.add(ids=ids, uris=uris)
            assert col.count() == 1
            with pytest.raises(URIOutsideRootsError):
                col.upsert(ids=["in"], uris=[uris[-1]])
            assert col.get(ids=["in"], include=["uris"])["uris"] == [inside]
        with pytest.raises(URIOutsideRootsError):
            col.query(query_uris=[outside], n_results=1)
        assert col.get(include=["uris"]) == {
            "ids": ["in"], "embeddings": None, "documents": None, "uris": [inside], "data": None,
            "metadatas": None, "included": ["uris"]}
