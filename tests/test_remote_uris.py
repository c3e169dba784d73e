"""The data loader on remote URIs, against real servers on loopback: moto's S3 server for
``s3://``, Azurite for ``az://``, fake-gcs-server for ``gs://``, an aiohttp site for ``http(s)://`` (slow, huge, endless,
redirecting and non-image responses), and the SSRF guard refusing each non-public address
class, directly, through a redirect and through a DNS name."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from consumers.loading.fetch import set_process_limit
from consumers.loading.load import ImageLoader
from schemas.errors import DataLoaderError, FetchError, LimitExceededError, URINotAllowedError
from streamer.testing.servers import moto_s3
from tests.remote_servers import WebSite, azurite, fake_gcs, web_site

LOOPBACK = ["127.0.0.1/32"]  # the explicit allow the loopback test site needs


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebSite]:
    with web_site(tmp_path_factory.mktemp("site")) as s:
        yield s


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def http_loader(site: WebSite, **remote: Any) -> ImageLoader:
    config = {"allow": [site.url + "/"], "allow_networks": LOOPBACK, "timeout_s": 5, **remote}
    return ImageLoader(remote=config, max_bytes=8 << 20, max_pixels=4_000_000)


def test_http_photos_load_concurrently_within_the_in_flight_bound(site: WebSite) -> None:
    loader = http_loader(site, max_in_flight=3)
    names = sorted(site.photos)
    site.reset()
    images = loader([f"{site.url}/photos/{n}?delay=0.3" for n in names])
    for name, image in zip(names, images, strict=True):
        assert image is not None and np.array_equal(image, pixels(site.photos[name]))
    assert site.peak == 3  # concurrent, and never more than the bound
    # The process-wide bound holds across loaders (streamer serve sets it from
    # STREAMER_REMOTE_MAX_IN_FLIGHT).
    set_process_limit(2)
    try:
        site.reset()
        uris = [f"{site.url}/photos/{n}?delay=0.3" for n in names]
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda loader: loader(uris), [http_loader(site), http_loader(site)]))
        assert site.peak == 2
    finally:
        set_process_limit(64)


def test_remote_uris_are_off_until_allowed(site: WebSite) -> None:
    uri = f"{site.url}/photos/{sorted(site.photos)[0]}"
    site.reset()
    for loader in (ImageLoader(), ImageLoader(remote={"allow": ["https://elsewhere.example/"]})):
        with pytest.raises(URINotAllowedError):
            loader([uri])
    with pytest.raises(URINotAllowedError, match="not under an allowed prefix"):
        http_loader(site)([site.url.replace("127.0.0.1", "127.0.0.2") + "/photos/x.jpg"])
    # A prefix matches whole segments; dot segments and userinfo are refused.
    narrow = ImageLoader(remote={"allow": [site.url + "/pho"], "allow_networks": LOOPBACK})
    with pytest.raises(URINotAllowedError):
        narrow([uri])
    with pytest.raises(URINotAllowedError):
        http_loader(site)([f"{site.url}/photos/../page.html"])
    with pytest.raises(URINotAllowedError, match="credentials") as info:
        http_loader(site)([uri.replace("http://", "http://ana:hunter2@")])
    assert "hunter2" not in str(info.value)
    assert sum(site.hits.values()) == 0  # refused before any request


def test_failures_are_typed_and_retries_back_off(site: WebSite) -> None:
    loader = http_loader(site, retries=2)
    site.reset()
    image = loader([f"{site.url}/flaky?fail=2"])[0]
    assert image is not None and site.hits["/flaky"] == 3  # two 503s, then the photo
    with pytest.raises(FetchError, match="HTTP 404"):
        loader([f"{site.url}/photos/missing.jpg"])
    assert site.hits["/photos/missing.jpg"] == 1  # a 404 is not retried
    with pytest.raises(FetchError, match="HTTP 403"):
        loader([f"{site.url}/private/a.jpg"])
    assert site.hits["/private/a.jpg"] == 1  # nor a refusal
    with pytest.raises(DataLoaderError, match="not an image"):
        loader([f"{site.url}/page.html"])
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out after 0\.5 s"):
        http_loader(site, timeout_s=0.5, retries=1)([f"{site.url}/slow"])
    assert time.monotonic() - started < 5 and site.hits["/slow"] == 2
    # Presigned-style query strings never reach an error message.
    with pytest.raises(FetchError) as info:
        loader([f"{site.url}/photos/missing.jpg?X-Amz-Signature=deadbeef"])
    assert "deadbeef" not in str(info.value)


def test_byte_and_pixel_caps_stop_the_stream(site: WebSite) -> None:
    site.reset()
    with pytest.raises(LimitExceededError, match="10737418240 bytes"):
        http_loader(site)([f"{site.url}/huge"])  # refused on its declared length
    with pytest.raises(LimitExceededError, match="stopped reading"):
        http_loader(site)([f"{site.url}/endless"])  # no length: cut at the cap
    roomy = ImageLoader(remote={"allow": [site.url + "/"], "allow_networks": LOOPBACK},
                        max_bytes=1 << 30, max_pixels=4_000_000)
    with pytest.raises(LimitExceededError, match=r"pixels.*stopped reading"):
        roomy([f"{site.url}/wide.png"])  # header says 60000 x 60000: stop at once
    with pytest.raises(LimitExceededError, match=r"16000000 pixels.*stopped reading"):
        roomy([f"{site.url}/wide.png?side=4000"])  # under PIL's own bomb check, over ours
    time.sleep(0.5)  # let the server notice the closed connections
    assert site.sent["/huge"] < 64 << 20
    assert site.sent["/endless"] < 64 << 20
    assert site.sent["/wide.png"] < 64 << 20


FORBIDDEN = {
    "loopback": "http://127.0.0.1:{port}/photos/{photo}",
    "loopback other": "http://127.0.0.3:{port}/photos/{photo}",
    "ipv6 loopback": "http://[::1]:{port}/photos/{photo}",
    "ipv4-mapped ipv6": "http://[::ffff:7f00:1]:{port}/photos/{photo}",
    "dns name to loopback": "http://localhost:{port}/photos/{photo}",
    "metadata service": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "link-local": "http://169.254.10.10/x.jpg",
    "ipv6 link-local": "http://[fe80::1]/x.jpg",
    "private 10/8": "http://10.0.0.8/x.jpg",
    "private 172.16/12": "http://172.16.5.4/x.jpg",
    "private 192.168/16": "http://192.168.1.10/x.jpg",
    "ipv6 unique local": "http://[fd00:ec2::254]/latest/meta-data/",
    "cgnat": "http://100.64.0.1/x.jpg",
    "unspecified": "http://0.0.0.0:{port}/photos/{photo}",
}


def _forbidden(site: WebSite) -> dict[str, str]:
    port = site.url.rsplit(":", 1)[1]
    photo = sorted(site.photos)[0]
    return {k: v.format(port=port, photo=photo) for k, v in FORBIDDEN.items()}


def _prefixes(uris: list[str]) -> list[str]:
    return sorted({u.split("/", 3)[0] + "//" + u.split("/", 3)[2] + "/" for u in uris})


@pytest.mark.parametrize("kind", list(FORBIDDEN))
def test_ssrf_each_non_public_address_is_refused_by_default(site: WebSite, kind: str) -> None:
    uri = _forbidden(site)[kind]
    # Every host is on the allow-list: what refuses is the address guard, not the prefixes.
    loader = ImageLoader(remote={"allow": _prefixes([uri]), "timeout_s": 5, "retries": 0})
    site.reset()
    with pytest.raises(URINotAllowedError, match="non-public address"):
        loader([uri])
    assert sum(site.hits.values()) == 0


@pytest.mark.parametrize("kind", list(FORBIDDEN))
def test_ssrf_a_redirect_to_a_non_public_address_is_refused(site: WebSite, kind: str) -> None:
    """The site is also served on 127.0.0.2, explicitly allowed there (127.0.0.2/32) and
    nowhere else; its redirect to each other non-public address (127.0.0.1 included, and
    ``localhost``) is refused after the redirect, before connecting."""
    target = _forbidden(site)[kind]
    start = f"{site.url.replace('127.0.0.1', '127.0.0.2')}/redirect?to={target}"
    loader = ImageLoader(remote={"allow": _prefixes([start, target]),
                                 "allow_networks": ["127.0.0.2/32"], "timeout_s": 5, "retries": 0})
    site.reset()
    with pytest.raises(URINotAllowedError, match="non-public address"):
        loader([start])
    assert site.hits["/redirect"] == 1 and sum(site.hits.values()) == 1


def test_ssrf_allowed_networks_open_exactly_what_they_name(site: WebSite) -> None:
    photo = sorted(site.photos)[0]
    good = f"{site.url}/photos/{photo}"
    loader = ImageLoader(remote={"allow": _prefixes([good]), "allow_networks": LOOPBACK})
    assert loader([good])[0] is not None
    # A redirect back to an allowed address is followed; one off the allow-list is refused.
    assert loader([f"{site.url}/redirect?to=/photos/{photo}"])[0] is not None
    with pytest.raises(URINotAllowedError, match="not under an allowed prefix"):
        loader([f"{site.url}/redirect?to=https://images.example.org/a.jpg"])
    for target in ("file:///etc/passwd", "s3://catalog/a.jpg"):
        with pytest.raises(URINotAllowedError, match=r"redirects off http\(s\)"):
            loader([f"{site.url}/redirect?to={target}"])


def _put_s3(endpoint: str, bucket: str, objects: dict[str, bytes]) -> None:
    import boto3  # moto's dependency: a second, independent S3 client to upload with

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_s3_objects_load_from_a_real_s3_server(tmp_path: Path, site: WebSite,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-never-logged")
    photos = dict(sorted(site.photos.items())[:4])
    with moto_s3() as endpoint:
        _put_s3(endpoint, "catalog", {f"products/red sneaker {n}": b for n, b in photos.items()}
                | {"products/notes.txt": b"just text", "private/x.jpg": next(iter(photos.values()))})
        stores = {"s3": {"endpoint": endpoint, "region": "us-east-1", "allow_http": "true"}}
        loader = ImageLoader(remote={"allow": ["s3://catalog/products/"], "stores": stores,
                                     "retries": 1, "timeout_s": 5})
        uris = [f"s3://catalog/products/red sneaker {n}" for n in photos]
        for image, body in zip(loader(uris), photos.values(), strict=True):
            assert image is not None and np.array_equal(image, pixels(body))
        with pytest.raises(FetchError, match="not found") as info:
            loader(["s3://catalog/products/gone.jpg"])
        assert "s3cr3t" not in str(info.value)
        with pytest.raises(DataLoaderError, match="not an image"):
            loader(["s3://catalog/products/notes.txt"])
        with pytest.raises(URINotAllowedError):
            loader(["s3://catalog/private/x.jpg"])
        small = ImageLoader(remote={"allow": ["s3://catalog/"], "stores": stores}, max_bytes=1000)
        with pytest.raises(LimitExceededError, match="over the limit of 1000"):
            small([uris[0]])
        with pytest.raises(ValueError, match="credential"):
            ImageLoader(remote={"allow": ["s3://catalog/"],
                                "stores": {"s3": {"secret_access_key": "x"}}})
    assert "s3cr3t" not in repr(loader.get_config())


def test_az_blobs_load_from_azurite(tmp_path: Path, site: WebSite,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    photos = dict(sorted(site.photos.items())[:3])
    if shutil.which("npm") is None:  # a developer box without node; .ci/run installs it
        pytest.skip("needs node and npm: apt-get install -y nodejs npm")
    ctx = azurite(tmp_path / "azurite")
    endpoint = ctx.__enter__()
    try:
        from obstore.store import AzureStore

        # The emulator is chosen the usual way, by environment: no credential in any spec.
        monkeypatch.setenv("AZURE_STORAGE_USE_EMULATOR", "true")
        monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", endpoint.rsplit("/", 1)[0])
        stores = {"az": {"allow_http": "true"}}
        writer = AzureStore("images", client_options={"allow_http": True})
        _create_container(endpoint)
        for name, body in photos.items():
            writer.put(f"shop/{name}", body)
        loader = ImageLoader(remote={"allow": ["az://images/shop/"], "stores": stores,
                                     "retries": 1, "timeout_s": 5})
        got = loader([f"az://images/shop/{n}" for n in photos])
        for image, body in zip(got, photos.values(), strict=True):
            assert image is not None and np.array_equal(image, pixels(body))
        with pytest.raises(FetchError, match="not found"):
            loader(["az://images/shop/none.jpg"])
    finally:
        ctx.__exit__(None, None, None)


def test_gs_objects_load_from_fake_gcs_server(tmp_path: Path, site: WebSite,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import urllib.parse
    import urllib.request

    photos = dict(sorted(site.photos.items())[:3])
    with fake_gcs() as base:
        # GCS is configured the usual way: a service-account file named by the environment
        # (here the emulator's: its base URL, no OAuth).
        account = tmp_path / "service-account.json"
        account.write_text(json.dumps({"gcs_base_url": base, "disable_oauth": True,
                                       "client_email": "", "private_key": "",
                                       "private_key_id": ""}))
        monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT", str(account))

        def call(url: str, body: bytes, content_type: str) -> None:
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": content_type})
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200

        call(f"{base}/storage/v1/b", json.dumps({"name": "shop"}).encode(), "application/json")
        for name, body in photos.items():
            call(f"{base}/upload/storage/v1/b/shop/o?uploadType=media&name="
                 + urllib.parse.quote(f"items/{name}", safe=""), body, "image/jpeg")
        loader = ImageLoader(remote={"allow": ["gs://shop/items/"], "retries": 1, "timeout_s": 5,
                                     "stores": {"gs": {"allow_http": "true"}}})
        got = loader([f"gs://shop/items/{n}" for n in photos])
        for image, body in zip(got, photos.values(), strict=True):
            assert image is not None and np.array_equal(image, pixels(body))
        with pytest.raises(FetchError, match="not found"):
            loader(["gs://shop/items/none.jpg"])
        with pytest.raises(URINotAllowedError):
            loader(["gs://shop/other.jpg"])


def _create_container(endpoint: str) -> None:
    """Azurite starts empty; a container is created with one signed REST call (obstore has
    no container API), using the emulator's published development key."""
    import base64
    import hashlib
    import hmac
    import urllib.request
    from email.utils import formatdate

    key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq"
                           "/K1SZFPTOtr/KBHBeksoGMGw==")
    date = formatdate(usegmt=True)
    canon_headers = f"x-ms-date:{date}\nx-ms-version:2021-08-06\n"
    canon_resource = "/devstoreaccount1/devstoreaccount1/images\nrestype:container"
    to_sign = "PUT\n" + "\n" * 11 + canon_headers + canon_resource
    sig = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
    req = urllib.request.Request(f"{endpoint}/images?restype=container", method="PUT", headers={
        "x-ms-date": date, "x-ms-version": "2021-08-06",
        "Authorization": f"SharedKey devstoreaccount1:{sig}", "Content-Length": "0"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201


def test_the_server_allow_list_wins_over_the_spec() -> None:
    from streamer.kafka.wire_checks import server_loader
    from streamer.settings import Settings

    def run(asked: dict[str, Any] | None, **server: Any) -> dict[str, Any] | None:
        config = {"roots": None} if asked is None else {"roots": None, "remote": asked}
        out = server_loader({"name": "image_loader", "config": config}, Settings(**server))
        remote: dict[str, Any] | None = out["config"].get("remote")
        return remote

    spec = {"allow": ["s3://", "https://cdn.example.com/"],
            "stores": {"s3": {"endpoint": "http://169.254.169.254"}},
            "allow_networks": ["10.0.0.0/8"], "timeout_s": 99}
    assert run(spec) is None  # the server allows nothing: remote URIs are off
    got = run(spec, remote_allow="s3://catalog/,s3://other/p/", remote_allow_networks="10.1.0.0/16",
              remote_stores={"s3": {"endpoint": "http://127.0.0.1:9000"}}, remote_timeout_s=7)
    assert got is not None
    assert got["allow"] == ["s3://catalog/", "s3://other/p/"]  # https:// is not the server's
    assert got["stores"] == {"s3": {"endpoint": "http://127.0.0.1:9000"}}  # never the spec's
    assert got["allow_networks"] == [] and got["timeout_s"] == 7
    narrower = run({"allow": ["s3://catalog/shoes/"], "allow_networks": ["10.1.2.0/24"]},
                   remote_allow="s3://catalog/", remote_allow_networks="10.1.0.0/16")
    assert narrower is not None and narrower["allow"] == ["s3://catalog/shoes/"]
    assert narrower["allow_networks"] == ["10.1.2.0/24"]
    # A spec that says nothing about remote URIs gets the server's allow-list.
    plain = run(None, remote_allow="https://img.example.com/")
    assert plain is not None and plain["allow"] == ["https://img.example.com/"]
    assert run({"allow": ["s3://elsewhere/"]}, remote_allow="s3://catalog/") is None
