"""Search a catalog by words: `text_search(catalog, "red striped summer shirt", k=10)`.

The words that name values the catalog holds become conditions (`words.plan_words`); the
whole text's sentence vector (`text_encoder`), mapped into the catalog model's image-vector
space by the model's text alignment (`alignment`), is the query vector: searched in the
catalog's own index with the filters and steering of a photo search, so nothing is
re-embedded. The result says how each word was used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import FashionLensError
from .alignment import TextAlignment, alignment_for
from .filters import column_sql, parse_filters
from .text_encoder import shared_encoder
from .words import Vocabulary, WordPlan, catalog_values, plan_words

if TYPE_CHECKING:
    from .catalog import Catalog, Match

MAX_TEXT = 500  # characters


@dataclass
class TextQuery:
    vector: np.ndarray
    plan: WordPlan
    # Below this a match is weak: the similarity 95 % of validation product names reach
    # with their own photo (the alignment's `weak_below`; text-to-photo similarities are
    # of another scale than the catalog's photo-to-photo floor).
    weak_below: float | None = None

    @property
    def conditions(self) -> list[str]:
        return self.plan.conditions

    def to_dict(self) -> dict:
        return self.plan.to_dict()


def _model_folder(catalog: Catalog) -> Path | None:
    from ..models.resolve import resolve_model

    spec = catalog._model_request or catalog.model
    if spec is None:  # imported vectors of no recorded model
        return None
    try:
        return resolve_model(spec).folder
    except FashionLensError:
        return None


def catalog_alignment(catalog: Catalog) -> TextAlignment:
    """The catalog's model's text alignment (cached on the catalog while its model holds)."""
    fingerprint = catalog.model_fingerprint()
    cached = getattr(catalog, "_text_alignment", None)
    if cached is not None and cached[0] == fingerprint:
        return cached[1]
    alignment = alignment_for(_model_folder(catalog), fingerprint, catalog.dim,
                              catalog._model_request or catalog.model)
    catalog._text_alignment = (fingerprint, alignment)
    return alignment


def catalog_vocabulary(catalog: Catalog) -> Vocabulary:
    """The words the catalog's field values give (re-read after the catalog changed)."""
    catalog.store.catch_up()
    version = catalog.store.generation
    cached = getattr(catalog, "_text_vocabulary", None)
    if cached is not None and cached[0] == version:
        return cached[1]
    vocab = Vocabulary.from_values(catalog_values(catalog.store.db, column_sql))
    catalog._text_vocabulary = (version, vocab)
    return vocab


def text_query(catalog: Catalog, text: str) -> TextQuery:
    """The query vector and the word plan of `text` for `catalog`."""
    text = " ".join(str(text).split())
    if not text:
        raise FashionLensError("the text query is empty; give some words, e.g. 'red dress'")
    if len(text) > MAX_TEXT:
        raise FashionLensError(f"the text query has {len(text)} characters; at most "
                               f"{MAX_TEXT}")
    alignment = catalog_alignment(catalog)
    vector = alignment.project(shared_encoder().encode([text]))[0]
    floor = alignment.meta.get("weak_below")
    return TextQuery(vector, plan_words(text, catalog_vocabulary(catalog)),
                     float(floor) if isinstance(floor, int | float) else None)


def text_search(catalog: Catalog, text: str, *, k: int = 10, filters=None,
                steer: Mapping[str, float] | str | None = None, use_conditions: bool = True,
                **options) -> tuple[list[Match], TextQuery]:
    """The k items best matching `text` (and `filters`), and how its words were used.
    `use_conditions=False` ranks by meaning alone (the words stay in the plan as meaning);
    `options` go to `Catalog.search` as they are (e.g. min_similarity)."""
    query = text_query(catalog, text)
    if not use_conditions:
        for word in query.plan.words:
            word.update(used_as="meaning")
            word.pop("filter", None)
            word.pop("fields", None)
        query.plan.conditions = []
    conditions = [*parse_filters(filters), *parse_filters(query.conditions)]
    options = {name: value for name, value in options.items() if value is not None}
    matches = catalog.search(vector=query.vector, k=k, filters=conditions, steer=steer,
                             **options)
    for match in matches:
        match.weak = query.weak_below is not None and match.similarity < query.weak_below
    return matches, query
