import pytest

from eef.envs.webshop.nouns import nouns
from eef.envs.webshop.reward import (attribute_matches, normalize_color, option_matches,
                                     purchase_reward, token_set_ratio, type_reward)

PRODUCT = {
    "name": "Blue Diamond Almonds Nut Thins Gluten Free Cracker Crisps",
    "Title": "Blue Diamond Almonds Nut Thins Gluten Free Cracker Crisps",
    "query": "pantry staples",
    "product_category": "Grocery & Gourmet Food › Snacks › Crackers",
    "Attributes": ["gluten free", "protein serving"],
    "BulletPoints": ["Made with real almonds", "Crunchy"],
    "Description": "A crispy cracker in smokehouse flavor.",
}


@pytest.mark.parametrize("value,want", [
    ("", ""), ("black forest", "black"), ("violet lavender", "lavender"),
    ("steelivy fuchsia", "fuchsia"), ("123alabaster", "alabaster"), ("webshop", "webshop")])
def test_normalize_color_matches_webshop(value, want):
    assert normalize_color(value) == want


def test_token_set_ratio_thefuzz_semantics():
    assert token_set_ratio("Gluten-Free", "gluten free") == 100  # processed: punctuation, case
    assert token_set_ratio("", "x") == 0
    assert token_set_ratio("gluten free snack", "gluten free") == 100  # subset
    assert isinstance(token_set_ratio("abc", "abd"), int)


def test_attribute_matches_fuzzy_then_text():
    # 'gluten free' fuzzy-matches an attribute; 'real almonds' is in the bullet points;
    # 'low sodium' is nowhere
    assert attribute_matches(PRODUCT, ["gluten free", "real almonds", "low sodium"]) == 2


def test_option_matches_exact_for_size_fuzzy_otherwise_and_text_fallback():
    assert option_matches(PRODUCT, ["4.25 ounce (pack of 2)", "smokehouse"],
                          {"size": "4.25 ounce (pack of 2)", "flavor name": "smokehouse"}) == 2
    # size is exact: a near miss does not count (and is not in the text)
    assert option_matches(PRODUCT, ["4.25 ounce (pack of 2)"], {"size": "4.25 ounce (pack of 3)"}) == 0
    # colours are normalised to the first COLOR_SET entry they contain, then fuzzy-matched:
    # "navy blue" and "dark blue" both become "blue"; "navy" stays "navy"
    assert option_matches(PRODUCT, ["navy blue"], {"color": "dark blue"}) == 1
    assert option_matches(PRODUCT, ["navy blue"], {"color": "navy"}) == 0
    # not matched, but found in the description
    assert option_matches(PRODUCT, ["original"], {"flavor name": "smokehouse"}) == 1


def test_type_reward_cases():
    same = type_reward(PRODUCT, "pantry staples", PRODUCT["product_category"], PRODUCT["name"])
    assert same == (1.0, True, True, 1.0)
    # no query / category match; 1 of the goal's nouns found (1/4 = 0.25 > 0.2): r_type 1
    r, qm, cm, ts = type_reward(PRODUCT, "other", "A › B", "Almonds Bag Box Jar")
    assert (qm, cm) == (False, False) and ts == pytest.approx(0.25) and r == 1.0
    # 1 of 8 nouns (0.125 in [0.1, 0.2]), nothing else matching: 0.5
    r, *_ = type_reward(PRODUCT, "other", "A › B", "Almonds Bag Box Jar Lid Cup Pan Pot")
    assert r == 0.5
    # below 0.1: 0.1; no overlap at all: 0
    r, *_ = type_reward(PRODUCT, "other", "A › B", "Almonds Bb Cc Dd Ee Ff Gg Hh Jj Kk Ll")
    assert r == 0.1
    r, *_ = type_reward(PRODUCT, "pantry staples", "A › B", "Shoes")
    assert r == 0.0


def test_purchase_reward_formula_by_hand():
    # goal: 3 attributes (2 match), 2 options (1 matches), price ok; same type
    info = purchase_reward(PRODUCT, 9.0, {"flavor name": "smokehouse", "size": "8 ounce"},
                           attributes=["gluten free", "real almonds", "low sodium"],
                           goal_options={"flavor name": "smokehouse", "size": "4.25 ounce"},
                           price_upper=10.0, query="pantry staples",
                           product_category=PRODUCT["product_category"], name=PRODUCT["name"])
    assert info.reward == pytest.approx((2 + 1 + 1) / (3 + 2 + 1))
    over = purchase_reward(PRODUCT, 11.0, {}, attributes=["gluten free"], goal_options={},
                           price_upper=10.0, query="pantry staples",
                           product_category=PRODUCT["product_category"], name=PRODUCT["name"])
    assert over.reward == pytest.approx(1 / 2) and over.r_price is False


def test_rule_nouns():
    assert nouns("The Blue Diamond Almonds, 4.25 Ounce (Pack of 2)") == \
        ("diamond", "almonds", "ounce", "pack")
    with pytest.raises(ValueError):
        nouns("x", tagger="nope")
