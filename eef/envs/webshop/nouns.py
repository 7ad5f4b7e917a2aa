"""Nouns of a product name, for WebShop's product-type reward factor.

WebShop tags product names with spaCy (``en_core_web_sm`` in its setup script) and keeps tokens
tagged NOUN / PROPN.  spaCy's models are not installable from PyPI here, so the default tagger is
a small rule-based one:

* tokens are spaCy-like: runs of letters/digits, with hyphens and other punctuation split off;
* a token is a noun unless it is a closed-class word (determiner, preposition, conjunction,
  pronoun, auxiliary, numeral word), a number or unit-less digit run, punctuation, or one of a
  short list of frequent title adjectives / participles.

Product titles are Title Case, which spaCy mostly tags PROPN; so "every content word is a noun"
is close to its behaviour.  ``tagger="spacy"`` uses spaCy when it is installed (the model
named by ``EEF_SPACY_MODEL``, else en_core_web_lg / md / sm); ``benchmarks/webshop_experts.py`` counts the goals on which the two
taggers give a different type factor when a wrong product is bought.
"""

from __future__ import annotations

import re
from functools import lru_cache

_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+(?:[.,]\d+)*|[^\sA-Za-z\d]")

_CLOSED = set("""
a an the this that these those some any each every all both either neither no another such
of in on at by for with without from to into onto upon over under above below between among
through during before after about against along around across behind beside besides beyond
near off out up down per via than like unlike toward towards within
and or but nor so yet plus
i me my mine you your yours he him his she her hers it its we us our ours they them their theirs
who whom whose which what
is are was were be been being am do does did have has had can could will would shall should
may might must
not very too also just only more most less least much many few
one two three four five six seven eight nine ten eleven twelve
""".split())

# frequent non-noun words in catalogue titles (adjectives, participles, adverbs)
_ADJ = set("""
new large small big little long short high low tall soft hard light heavy dark bright
black white red blue green yellow pink purple grey gray brown beige orange gold silver
natural organic premium professional portable adjustable waterproof durable compatible
comfortable lightweight cute sexy casual classic modern vintage elegant fashion
stylish womens mens women's men's unisex easy extra super ultra full free slim wide
non anti multi mini digital electric wireless best great perfect original real pure
fresh healthy safe clean clear thick thin warm cool hot cold dry wet
handmade reusable washable rechargeable removable stainless breathable
used made designed including included
""".split())


def _is_noun(tok: str) -> bool:
    if not tok[0].isalpha():
        return False
    w = tok.lower()
    return w not in _CLOSED and w not in _ADJ


@lru_cache(maxsize=8192)
def nouns_rule(text: str) -> tuple[str, ...]:
    return tuple(t.lower() for t in _TOKEN.findall(text) if _is_noun(t))


@lru_cache(maxsize=1)
def _spacy_nlp():
    try:
        import spacy
    except ImportError as e:
        raise RuntimeError("tagger='spacy' needs spaCy and an en_core_web_* model installed") from e
    import os
    names = [os.environ["EEF_SPACY_MODEL"]] if os.environ.get("EEF_SPACY_MODEL") else \
        ["en_core_web_lg", "en_core_web_md", "en_core_web_sm"]
    for name in names:
        try:
            return spacy.load(name)
        except OSError:
            continue
    raise RuntimeError(f"tagger='spacy': none of the spaCy models {names} is installed "
                       "(EEF_SPACY_MODEL names another)")


@lru_cache(maxsize=8192)
def nouns_spacy(text: str) -> tuple[str, ...]:
    return tuple(t.text.lower() for t in _spacy_nlp()(text) if t.pos_ in ("NOUN", "PROPN"))


def nouns(text: str, tagger: str = "rule") -> tuple[str, ...]:
    if tagger == "rule":
        return nouns_rule(text)
    if tagger == "spacy":
        return nouns_spacy(text)
    raise ValueError(f"unknown noun tagger {tagger!r} (rule | spacy)")
