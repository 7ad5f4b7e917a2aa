"""BM25 search over the catalogue's ``contents`` (bm25s).

WebShop searches a Lucene index through pyserini with its defaults; we match them where bm25s
lets us: BM25 with k1 = 0.9, b = 0.4 (Anserini's defaults), Lucene's scoring variant, Porter
stemming and Lucene's 33-word English stop list, tokens = runs of word characters (single
characters kept).  Results are the top 50 documents with a positive score (Lucene returns only
documents that match a query term).  The index is built once per process and cached on disk
under ``<cache dir>/webshop/bm25-<hash of the corpus and parameters>``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path

import numpy as np

from eef.paths import cache_dir

K1, B = 0.9, 0.4
SEARCH_RETURN_N = 50
TOKEN_PATTERN = r"(?u)\b\w+\b"
LUCENE_STOPWORDS = (
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with").split()

_LOCK = threading.Lock()
_INDEXES: dict[str, "SearchIndex"] = {}


class SearchIndex:
    def __init__(self, asins: list[str], texts: list[str], cache: Path | None = None):
        import bm25s
        import Stemmer

        self.asins = asins
        self._stemmer = Stemmer.Stemmer("porter")
        self._word = re.compile(TOKEN_PATTERN)
        self._stop = set(LUCENE_STOPWORDS)
        key = hashlib.sha256(json.dumps([asins, texts, K1, B, TOKEN_PATTERN, "porter",
                                         LUCENE_STOPWORDS]).encode()).hexdigest()[:16]
        path = (cache or cache_dir() / "webshop") / f"bm25-{key}"
        self.built = False
        if (path / "params.index.json").exists():
            try:
                self.bm25 = bm25s.BM25.load(str(path), show_progress=False)
            except Exception:  # a half-written cache: rebuild it
                self.bm25 = None
        else:
            self.bm25 = None
        if self.bm25 is None:
            self.bm25 = bm25s.BM25(k1=K1, b=B, method="lucene")
            self.bm25.index([self.tokenize(t) for t in texts], show_progress=False)
            tmp = path.with_name(path.name + ".tmp")
            tmp.mkdir(parents=True, exist_ok=True)
            self.bm25.save(str(tmp), show_progress=False)
            try:
                tmp.rename(path)
            except OSError:  # another process won the race
                pass
            self.built = True
        self._vocab = self.bm25.vocab_dict

    def tokenize(self, text: str) -> list[str]:
        words = [w for w in self._word.findall(text.lower()) if w not in self._stop]
        return self._stemmer.stemWords(words)

    def search(self, query: str, k: int = SEARCH_RETURN_N) -> list[str]:
        """ASINs of the top ``k`` products with a positive score, best first."""
        ids = [self._vocab[t] for t in self.tokenize(query) if t in self._vocab]
        if not ids:
            return []
        scores = self.bm25.get_scores(ids)
        n = min(k, int((scores > 0).sum()))
        if n == 0:
            return []
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        # best first; ties broken by catalogue order (stable)
        top = top[np.lexsort((top, -scores[top]))]
        return [self.asins[i] for i in top]


def get_index(asins: list[str], texts: list[str]) -> SearchIndex:
    """The process-wide index for this corpus (built or loaded once)."""
    key = hashlib.sha256("\x1e".join(asins).encode() + str(len(texts)).encode()).hexdigest()
    with _LOCK:
        if key not in _INDEXES:
            _INDEXES[key] = SearchIndex(asins, texts)
        return _INDEXES[key]
