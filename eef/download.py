"""``eef data download``: fetch public data files into the data dir, with checksums.

Each file is fetched to ``<name>.part`` (resuming a partial download with an HTTP Range request
when the server allows it), its SHA-256 checked against the pinned value, then renamed into
place; a mismatch deletes the partial file and raises ``ChecksumError``.  Files whose checksum
is not pinned upstream are recorded in ``<dir>/CHECKSUMS.sha256`` on first download and checked
against that record afterwards (trust on first use).  ``base_url`` replaces every source URL
with ``<base_url>/<file name>`` (a mirror, or a local server in tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx


class DownloadError(RuntimeError):
    pass


class ChecksumError(DownloadError):
    pass


@dataclass(frozen=True)
class Source:
    name: str
    urls: tuple[str, ...]
    sha256: str | None = None
    note: str = ""


_GDRIVE = "https://drive.google.com/uc?export=download&confirm=t&id="
#: WebShop's small (1,000-product) data, as its setup script downloads it
WEBSHOP_SOURCES = (
    Source("items_shuffle_1000.json", (_GDRIVE + "1EgHdxQ_YxqIQlvvq5iKlCrkEKR6-j0Ib",),
           None, "scraped products (WebShop, MIT)"),
    Source("items_ins_v2_1000.json", (_GDRIVE + "1IduG0xl544V_A_jv3tHXC0kyFi7PnyBu",),
           "f88a36314a397b53b3d9c3fa5878e5f7b26d35019a51ec83fbedeca61a948f6f",
           "attributes and synthetic instructions (WebShop, MIT)"),
)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _record(dest: Path) -> dict[str, str]:
    p = dest / "CHECKSUMS.sha256"
    out: dict[str, str] = {}
    if p.exists():
        for line in p.read_text().splitlines():
            if line.strip():
                digest, _, name = line.partition("  ")
                out[name.strip()] = digest.strip()
    return out


def _save_record(dest: Path, rec: dict[str, str]) -> None:
    (dest / "CHECKSUMS.sha256").write_text("".join(f"{d}  {n}\n" for n, d in sorted(rec.items())))


def fetch(src: Source, dest: Path, base_url: str | None = None, timeout: float = 60.0,
          progress: Callable[[str, int, int | None], None] | None = None) -> Path:
    """Download one file into ``dest`` (skipped when present with the right checksum)."""
    dest.mkdir(parents=True, exist_ok=True)
    target, part = dest / src.name, dest / (src.name + ".part")
    rec = _record(dest)
    want = src.sha256 or rec.get(src.name)
    if target.exists():
        got = sha256_file(target)
        if want is None or got == want:
            if want is None:
                rec[src.name] = got
                _save_record(dest, rec)
            return target
        raise ChecksumError(f"{target} exists but its SHA-256 is {got}, expected {want}; "
                            "delete it to download again")
    urls = [f"{base_url.rstrip('/')}/{src.name}"] if base_url else list(src.urls)
    errors = []
    for url in urls:
        try:
            _get(url, part, timeout, progress, src.name)
            break
        except (httpx.HTTPError, OSError) as e:
            errors.append(f"{url}: {e}")
    else:
        raise DownloadError(f"could not download {src.name}:\n  " + "\n  ".join(errors))
    got = sha256_file(part)
    if want is not None and got != want:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{src.name}: SHA-256 {got} does not match the expected {want}")
    os.replace(part, target)
    if want is None:
        rec[src.name] = got
        _save_record(dest, rec)
    return target


def _get(url: str, part: Path, timeout: float, progress, name: str) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with httpx.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as r:
        if r.status_code == 416:  # already complete
            return
        r.raise_for_status()
        mode = "ab" if have and r.status_code == 206 else "wb"
        total = r.headers.get("content-length")
        total_i = int(total) + (have if mode == "ab" else 0) if total else None
        done = have if mode == "ab" else 0
        with open(part, mode) as f:
            for chunk in r.iter_bytes(1 << 16):
                f.write(chunk)
                done += len(chunk)
                if progress:
                    progress(name, done, total_i)


def make_webshop_split(dest: Path, n_train: int = 335, n_test: int = 40, seed: int = 0) -> Path:
    """A product-level split of the instructable products: a seeded shuffle, the first
    ``n_train`` for train and the next ``n_test`` for test (the rest unused)."""
    ins = json.loads((dest / "items_ins_v2_1000.json").read_text())
    asins = sorted(a for a, v in ins.items() if v.get("instruction"))
    random.Random(seed).shuffle(asins)
    if n_train + n_test > len(asins):
        raise ValueError(f"only {len(asins)} instructable products")
    split = {"note": f"product-level split made by eef (seed {seed}): {n_train} train / "
                     f"{n_test} test products; goals of other products are never used",
             "train": sorted(asins[:n_train]), "test": sorted(asins[n_train:n_train + n_test])}
    path = dest / "split.json"
    path.write_text(json.dumps(split, indent=1))
    return path


def download_webshop(data_dir: Path, base_url: str | None = None,
                     progress: Callable[[str, int, int | None], None] | None = None) -> list[Path]:
    dest = data_dir / "webshop"
    paths = [fetch(s, dest, base_url, progress=progress) for s in WEBSHOP_SOURCES]
    if not (dest / "split.json").exists():
        paths.append(make_webshop_split(dest))
    return paths
