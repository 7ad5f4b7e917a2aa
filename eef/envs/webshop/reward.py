"""WebShop's purchase reward (its ``get_reward``), re-implemented.

reward = r_type × (n_attr + n_opt + [price <= cap]) / (|attributes| + |goal options| + 1)

* attributes: a goal attribute matches when the fuzzy token-set ratio against one of the bought
  product's attributes is > 85 (thefuzz semantics: both strings processed — lower-cased,
  non-alphanumerics to spaces, non-ASCII dropped — and the ratio rounded), else when it is a
  substring of the lower-cased title, bullet points or description;
* options: for each chosen option, after colour normalisation, exact membership for ``size``,
  fuzzy > 85 against the goal options otherwise, else substring of title / bullets / description;
* r_type (product type): 1, or 0.5 when neither the query, nor >= 2 category levels, nor > 20% of
  the goal name's nouns match; 0.1 when the noun overlap is < 10%; 0 when it is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process

from eef.envs.webshop.nouns import nouns

#: WebShop's colour vocabulary (normalize_color keeps the first listed colour found in a value)
COLOR_SET = (
    "alabaster apricot aqua ash asphalt azure banana beige black blue blush bordeaux bronze brown "
    "burgundy camel camo caramel champagne charcoal cheetah chestnut chocolate christmas coffee "
    "cognac copper coral cranberry cream crystal dark denim eggplant elephant espresso fuchsia gold "
    "granite grape graphite grass gray green grey heather indigo ivory ivy khaki lavender lemon "
    "leopard light lilac lime magenta maroon mauve merlot midnight mint mocha multicolor mushroom "
    "mustard natural navy nude olive orange peach pewter pink plum purple rainbow red rose royal "
    "rust sand sapphire seashell silver skull slate steel stone stonewash sunflower tan taupe teal "
    "tiger turquoise violet walnut wheat white wine yellow").split()
EXACT_MATCH_OPTS = ("size",)
FUZZY_THRESHOLD = 85


def normalize_color(value: str) -> str:
    for c in COLOR_SET:
        if c in value:
            return c
    return value


_LATIN1 = dict.fromkeys(range(128, 256))


def _process(s: str) -> str:
    # thefuzz's full_process(force_ascii=True): drop code points 128-255, then rapidfuzz's
    # default_process (lower-case, non-alphanumerics to spaces, trim)
    return default_process(s.translate(_LATIN1))


def token_set_ratio(a: str, b: str) -> int:
    """thefuzz's ``token_set_ratio`` (processed inputs, rounded score, 0 for empty input)."""
    a, b = _process(a), _process(b)
    if not a or not b:
        return 0
    return int(round(fuzz.token_set_ratio(a, b)))


@dataclass
class RewardInfo:
    reward: float
    r_type: float
    r_att: float
    r_option: float | None
    r_price: bool
    query_match: bool
    category_match: bool
    title_score: float


def type_reward(bought: dict[str, Any], goal_query: str, goal_category: str, goal_name: str,
                tagger: str = "rule") -> tuple[float, bool, bool, float]:
    query_match = bought.get("query", "") == goal_query
    cats_b = {x.strip() for x in bought.get("product_category", "").split("›")}
    cats_g = {x.strip() for x in goal_category.split("›")}
    category_match = len(cats_b & cats_g) >= 2
    want = set(nouns(goal_name, tagger))
    have = set(nouns(bought.get("name", bought.get("Title", "")), tagger))
    title_score = 0.2 if not want else len(have & want) / len(want)
    r = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r = 0.5
    if title_score < 0.1:
        r = 0.1
    if title_score == 0.0:
        r = 0.0
    return r, query_match, category_match, title_score


def _in_text(value: str, p: dict[str, Any]) -> bool:
    return (value in p.get("Title", "").lower()
            or value in " ".join(p.get("BulletPoints") or []).lower()
            or value in p.get("Description", "").lower())


def attribute_matches(bought: dict[str, Any], goal_attrs: tuple[str, ...] | list[str]) -> int:
    n = 0
    for g in goal_attrs:
        if any(token_set_ratio(a, g) > FUZZY_THRESHOLD for a in bought.get("Attributes", [])):
            n += 1
        elif _in_text(g, bought):
            n += 1
    return n


def option_matches(bought: dict[str, Any], goal_options: list[str], chosen: dict[str, str]) -> int:
    goal = [normalize_color(o) for o in goal_options]
    n = 0
    for name, value in chosen.items():
        v = normalize_color(value)
        if name.lower() in EXACT_MATCH_OPTS:
            matched = v in goal
        else:
            matched = any(token_set_ratio(g, v) > FUZZY_THRESHOLD for g in goal)
        if matched or _in_text(v, bought):
            n += 1
    return n


def purchase_reward(bought: dict[str, Any], price: float, chosen: dict[str, str], *,
                    attributes: tuple[str, ...] | list[str], goal_options: dict[str, str],
                    price_upper: float, query: str, product_category: str, name: str,
                    tagger: str = "rule") -> RewardInfo:
    r_type, qm, cm, ts = type_reward(bought, query, product_category, name, tagger)
    r_price = price <= price_upper
    n_att = attribute_matches(bought, attributes)
    gopts = list(goal_options.values())
    n_opt = option_matches(bought, gopts, chosen)
    total = (n_att + n_opt + r_price) / (len(attributes) + len(gopts) + 1) * r_type
    return RewardInfo(total, r_type, n_att / len(attributes) if attributes else 0.0,
                      n_opt / len(gopts) if gopts else None, r_price, qm, cm, ts)
