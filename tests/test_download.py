"""`eef data download webshop` against a local HTTP server on 127.0.0.1 (no outside traffic)."""

import functools
import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest

from eef.download import ChecksumError, DownloadError, Source, fetch, make_webshop_split
from eef.envs.webshop.data import load_catalogue

SHARED = Path(os.environ.get("EEF_DATA_DIR", "")) / "webshop"


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.RequestHandlerClass.log_message = lambda *a, **k: None
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _raw(product: dict) -> dict:
    """A processed catalogue product back in WebShop's raw scraped format."""
    p = product
    lo_hi = p["pricing"]
    pricing = "$" + " - $".join(str(x) for x in lo_hi)
    return {"asin": p["asin"], "name": p["Title"], "full_description": p["Description"],
            "small_description": p["BulletPoints"], "pricing": pricing,
            "customization_options": {k: [{"value": v, "image": None} for v in vals]
                                      for k, vals in p["options"].items()} or "",
            "images": p.get("images", []), "category": p["category"], "query": p["query"],
            "product_category": p["product_category"]}


@pytest.mark.needs_data
def test_download_original_format_and_load_it(server, tmp_path, monkeypatch):
    root, url = server
    products = [json.loads(x)["product"] for x in (SHARED / "products_1k.jsonl").read_text().splitlines()]
    (root / "items_shuffle_1000.json").write_text(json.dumps([_raw(p) for p in products]))
    (root / "items_ins_v2_1000.json").write_bytes((SHARED / "items_ins_v2_1000.json").read_bytes())
    data = tmp_path / "data"
    from eef.download import download_webshop
    paths = download_webshop(data, base_url=url)
    names = sorted(p.name for p in paths)
    assert names == ["items_ins_v2_1000.json", "items_shuffle_1000.json", "split.json"]
    # unpinned file: recorded on first use
    rec = (data / "webshop" / "CHECKSUMS.sha256").read_text()
    assert "items_shuffle_1000.json" in rec
    # the loader reads the original format and agrees with the processed JSONL
    ours = load_catalogue(str(data))
    ref = load_catalogue(str(SHARED.parent))
    assert ours.contents == ref.contents
    assert {a: p["Price"] for a, p in ours.products.items()} == \
        {a: p["Price"] for a, p in ref.products.items()}
    assert len(ours.goals) == 6910
    split = json.loads((data / "webshop" / "split.json").read_text())
    assert len(split["train"]) == 335 and len(split["test"]) == 40
    assert not set(split["train"]) & set(split["test"])
    # a second run is a no-op (present, checksums agree)
    assert download_webshop(data, base_url=url)


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    root, url = server
    (root / "f.json").write_text("[1, 2, 3]")
    src = Source("f.json", (), "0" * 64)
    with pytest.raises(ChecksumError, match="does not match"):
        fetch(src, tmp_path / "d", base_url=url)
    assert not (tmp_path / "d" / "f.json").exists()
    assert not (tmp_path / "d" / "f.json.part").exists()
    good = Source("f.json", (), hashlib.sha256(b"[1, 2, 3]").hexdigest())
    assert fetch(good, tmp_path / "d", base_url=url).read_text() == "[1, 2, 3]"


def test_tofu_record_detects_a_changed_file(server, tmp_path):
    root, url = server
    (root / "g.json").write_text("one")
    src = Source("g.json", ())
    fetch(src, tmp_path / "d", base_url=url)
    (tmp_path / "d" / "g.json").write_text("tampered")
    with pytest.raises(ChecksumError, match="exists but"):
        fetch(src, tmp_path / "d", base_url=url)


def test_unreachable_and_missing(server, tmp_path):
    root, url = server
    with pytest.raises(DownloadError, match="could not download"):
        fetch(Source("absent.json", ()), tmp_path / "d", base_url=url)
    with pytest.raises(DownloadError):
        fetch(Source("x.json", ("http://127.0.0.1:9/x.json",)), tmp_path / "d", timeout=2)


def test_resume_partial_download(server, tmp_path):
    root, url = server
    payload = b"0123456789" * 1000
    (root / "big.bin").write_bytes(payload)
    d = tmp_path / "d"
    d.mkdir()
    (d / "big.bin.part").write_bytes(payload[:3000])  # an interrupted download
    src = Source("big.bin", (), hashlib.sha256(payload).hexdigest())
    assert fetch(src, d, base_url=url).read_bytes() == payload


def test_make_split_is_deterministic(tmp_path):
    (tmp_path / "items_ins_v2_1000.json").write_text(json.dumps(
        {f"B{i:09d}": {"instruction": "x"} for i in range(20)} | {"B999999999": {}}))
    a = json.loads(make_webshop_split(tmp_path, 10, 5).read_text())
    b = json.loads(make_webshop_split(tmp_path, 10, 5).read_text())
    assert a == b and len(a["train"]) == 10 and len(a["test"]) == 5
    assert "B999999999" not in a["train"] + a["test"]
    with pytest.raises(ValueError):
        make_webshop_split(tmp_path, 30, 5)
