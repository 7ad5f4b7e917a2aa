"""WebShop data: the 1,000-product catalogue, its synthetic goals and the product-level split.

Files read from ``<data dir>/webshop/`` (see ``eef data download webshop``):

* the catalogue, either ``products_1k.jsonl`` (one ``{"id", "contents", "product"}`` per line,
  products already processed) or WebShop's original ``items_shuffle_1000.json`` (raw scraped
  products), processed here as WebShop's ``load_products`` does: title / description / bullet
  points, ``pricing`` parsed from the ``$a - $b`` string, options lower-cased with ``/`` → ``" | "``;
* ``items_ins_v2_1000.json``: per ASIN the ``attributes`` (used by the reward) and, for 415
  products, the synthetic ``instruction`` with its ``instruction_attributes``;
* ``split.json``: the product-level split (335 train / 40 test products).

Goals (WebShop's ``get_synthetic_goals``): one per instructable product × combination of its
option values (6,910 in all).  Instruction text = ``{instruction} with {opt}: {val}, and ... ,
and price lower than {cap:.2f} dollars``.  The product price and the price cap are drawn from
RNGs seeded by the ASIN (WebShop draws them from the unseeded global ``random``), so the goal
text of a task id never changes.  Task ids: ``webshop/{ASIN}/{k}`` with ``k`` the index of the
option combination (options sorted by name, values in catalogue order).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from eef.paths import DataNotFoundError, data_dir

#: WebShop's price caps: multiples of 10 dollars (``PRICE_RANGE`` in its goal module)
PRICE_RANGE = [10.0 * i for i in range(1, 100)]
#: goals per test product (deterministic choice), see ``split.json``'s note
TEST_GOALS_PER_PRODUCT = 5
CATALOGUE_FILES = ("products_1k.jsonl", "items_shuffle_1000.json")
ATTRIBUTES_FILE = "items_ins_v2_1000.json"
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class Goal:
    task_id: str
    asin: str
    index: int
    instruction_text: str
    attributes: tuple[str, ...]
    goal_options: dict[str, str] = field(hash=False)
    price_upper: float
    query: str
    category: str
    product_category: str
    name: str
    split: str | None = None


def _seeded(*parts: Any) -> random.Random:
    h = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def _find(root: Path, names: tuple[str, ...] | str) -> Path:
    names = (names,) if isinstance(names, str) else names
    for n in names:
        if (root / n).exists():
            return root / n
    raise DataNotFoundError(
        f"WebShop data not found: none of {', '.join(names)} in {root}. "
        "Run `eef data download webshop` or point --data-dir / EEF_DATA_DIR at a data dir.")


def _process_raw(p: dict[str, Any]) -> dict[str, Any]:
    """One raw scraped product (items_shuffle format) → the processed form (as WebShop)."""
    q = dict(p)
    q["Title"] = p["name"]
    q["Description"] = p.get("full_description", "")
    sd = p.get("small_description", "")
    q["BulletPoints"] = sd if isinstance(sd, list) else [sd]
    q["Reviews"], q["Rating"] = p.get("Reviews", []), p.get("Rating", "N.A.")
    pricing = p.get("pricing")
    if not pricing:
        q["pricing"], q["Price"] = [100.0], "$100.0"
    elif isinstance(pricing, list):
        q["pricing"] = [float(x) for x in pricing][:2]
        q["Price"] = (f"${q['pricing'][0]}" if len(q["pricing"]) == 1
                      else f"${q['pricing'][0]} to ${q['pricing'][1]}")
    else:
        vals = [float(Decimal(re.sub(r"[^\d.]", "", x))) for x in pricing.split("$")[1:]]
        q["pricing"] = vals[:2]
        q["Price"] = f"${vals[0]}" if len(vals) == 1 else f"${vals[0]} to ${vals[1]}"
    options: dict[str, list[str]] = {}
    for name, contents in (p.get("customization_options") or {}).items():
        if contents is None:
            continue
        options[name.lower()] = [c["value"].strip().replace("/", " | ").lower() for c in contents]
    q["options"] = options
    q["query"] = p.get("query", "").lower().strip()
    return q


def index_contents(p: dict[str, Any]) -> str:
    """The text WebShop's search index holds for a product: title, description, first bullet
    point and options, lower-cased (its ``convert_product_file_format``)."""
    opts = ", and ".join(f"{k}: {', '.join(v)}" for k, v in p.get("options", {}).items())
    bullets = p.get("BulletPoints") or [""]
    return " ".join([p["Title"], p["Description"], bullets[0], opts]).lower()


@dataclass
class Catalogue:
    products: dict[str, dict[str, Any]]        # ASIN -> processed product
    contents: dict[str, str]                   # ASIN -> indexed text
    prices: dict[str, float]                   # ASIN -> price paid at purchase
    goals: list[Goal]
    split: dict[str, list[str]]                # "train"/"test" -> ASINs
    source: str

    @property
    def goal_by_id(self) -> dict[str, Goal]:
        return self._by_id

    def __post_init__(self) -> None:
        self._by_id = {g.task_id: g for g in self.goals}


def _product_price(asin: str, pricing: list[float]) -> float:
    # WebShop: 100 when unknown, the price when single, uniform in the range otherwise
    if not pricing:
        return 100.0
    if len(pricing) == 1:
        return float(pricing[0])
    return _seeded("price", asin).uniform(*pricing[:2])


def _price_cap(asin: str, price: float) -> tuple[float, str]:
    above = [p for p in PRICE_RANGE if p > price][:4]
    if len(above) >= 2:
        _, cap = sorted(_seeded("cap", asin).sample(above, 2))
        return cap, f", and price lower than {cap:.2f} dollars"
    return 1_000_000.0, ""


@lru_cache(maxsize=4)
def load_catalogue(root: str | None = None) -> Catalogue:
    """Load (and cache per process) the catalogue, goals and split from the data dir."""
    base = data_dir(root) / "webshop"
    cat_path = _find(base, CATALOGUE_FILES)
    attrs = json.loads(_find(base, ATTRIBUTES_FILE).read_text())
    split_raw = json.loads(_find(base, SPLIT_FILE).read_text())
    products: dict[str, dict[str, Any]] = {}
    contents: dict[str, str] = {}
    try:
        if cat_path.suffix == ".jsonl":
            for line in cat_path.read_text(encoding="utf-8").split("\n"):
                if line.strip():
                    d = json.loads(line)
                    products[d["id"]] = d["product"]
                    contents[d["id"]] = d.get("contents") or index_contents(d["product"])
        else:
            for raw in json.loads(cat_path.read_text()):
                asin = raw.get("asin", "nan")
                if asin == "nan" or len(asin) > 10 or asin in products:
                    continue
                p = _process_raw(raw)
                a = attrs.get(asin, {})
                p["Attributes"] = a.get("attributes") or ["DUMMY_ATTR"]
                products[asin] = p
                contents[asin] = index_contents(p)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataNotFoundError(f"{cat_path}: malformed WebShop catalogue ({e})") from e

    prices = {a: _product_price(a, p.get("pricing") or []) for a, p in products.items()}
    split_of = {a: s for s in ("train", "test") for a in split_raw.get(s, [])}
    goals: list[Goal] = []
    for asin, p in products.items():
        ins = attrs.get(asin, {})
        if not ins.get("instruction"):
            continue
        cap, price_text = _price_cap(asin, prices[asin])
        names = sorted(p.get("options", {}))
        combos = list(itertools.product(*(p["options"][n] for n in names)))
        for k, combo in enumerate(combos):
            opts = dict(zip(names, combo))
            opt_text = ", and ".join(f"{n}: {v}" for n, v in opts.items())
            text = ins["instruction"] + (f" with {opt_text}" if opt_text else "") + price_text
            goals.append(Goal(f"webshop/{asin}/{k}", asin, k, text,
                              tuple(ins["instruction_attributes"]), opts, cap,
                              p.get("query", ""), p.get("category", ""),
                              p.get("product_category", ""), p["Title"], split_of.get(asin)))
    # test: up to 5 goals per test product, a deterministic choice; others keep their split
    # only for train products
    chosen: set[str] = set()
    by_asin: dict[str, list[Goal]] = {}
    for g in goals:
        by_asin.setdefault(g.asin, []).append(g)
    for asin in split_raw.get("test", []):
        gs = by_asin.get(asin, [])
        pick = gs if len(gs) <= TEST_GOALS_PER_PRODUCT else \
            sorted(_seeded("test", asin).sample(gs, TEST_GOALS_PER_PRODUCT), key=lambda g: g.index)
        chosen.update(g.task_id for g in pick)
    goals = [g if g.split != "test" or g.task_id in chosen else
             Goal(**{**g.__dict__, "split": None}) for g in goals]
    return Catalogue(products, contents, prices, goals,
                     {s: list(split_raw.get(s, [])) for s in ("train", "test")}, str(cat_path))
