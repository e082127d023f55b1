"""High-level search: embed the query the way the collection was indexed, then search.

``Searcher`` reads which models produced a collection's vectors from the collection's
metadata (written by the index job), loads them once, and offers text->image,
image->text, image->image and hybrid knowledge search with filters. Filter values are
matched to the values the collection holds, ignoring case (``medray.retrieval.filters``).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from medray.imaging import ImageDecodeError
from medray.retrieval import filters as filter_values
from medray.retrieval.store import (
    CASE_FILTERS,
    KNOWLEDGE_FILTERS,
    CaseStore,
    Hit,
    KnowledgeStore,
    MilvusSettings,
    RetrievalError,
    connect,
)


class Searcher:
    """Query both collections; models default to the ones recorded at indexing time."""

    def __init__(
        self, settings: MilvusSettings, clip_model: str | None = None, text_model: str | None = None
    ) -> None:
        self.settings = settings
        self.client = connect(settings)
        self.cases = CaseStore(settings, self.client)
        self.knowledge = KnowledgeStore(settings, self.client)
        self._clip_model = clip_model
        self._text_model = text_model
        self._values: dict[str, tuple[dict[str, list[str]], bool]] = {}

    def filter_values(self, collection: str = "cases") -> tuple[dict[str, list[str]], bool]:
        """``({field: values}, complete)`` of the ``cases`` or ``knowledge`` collection's
        filterable fields, read once per Searcher."""
        if collection not in self._values:
            store, fields = (
                (self.cases, CASE_FILTERS)
                if collection == "cases"
                else (self.knowledge, KNOWLEDGE_FILTERS)
            )
            store._require()
            self._values[collection] = filter_values.distinct_values(
                self.client, store.name, list(fields)
            )
        return self._values[collection]

    def _resolve(self, filters: Mapping[str, Any] | None, collection: str = "cases"):
        return (
            filter_values.resolve(filters, self.filter_values(collection)[0])
            if filters
            else filters
        )

    @cached_property
    def clip(self):
        from medray.models.encoders import ClipEncoder

        model = self._clip_model or self.cases._require().get("clip_model")
        if not model:
            raise RetrievalError(
                f"collection {self.cases.name!r} does not record its CLIP model; pass clip_model"
            )
        return ClipEncoder(model)

    @cached_property
    def text_encoder(self):
        from medray.models.encoders import TextEncoder

        model = self._text_model or self.knowledge._require().get("text_model")
        if not model:
            raise RetrievalError(
                f"collection {self.knowledge.name!r} does not record its text model; pass text_model"
            )
        return TextEncoder(model)

    def _image_vector(self, image: bytes) -> list[float]:
        try:
            return self.clip.encode_images([image])[0].tolist()
        except ImageDecodeError as e:
            raise RetrievalError(f"query image: {e}") from None

    def text_to_image(
        self, text: str, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """Cases whose image matches a text description."""
        if not text or not text.strip():
            raise RetrievalError("empty query")
        return self.cases.search(
            self.clip.encode_texts([text])[0].tolist(), "image", k, self._resolve(filters)
        )

    def image_to_text(
        self, image: bytes, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """Cases whose report matches an image."""
        return self.cases.search(self._image_vector(image), "text", k, self._resolve(filters))

    def image_to_image(
        self, image: bytes, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """Cases whose image looks like this one."""
        return self.cases.search(self._image_vector(image), "image", k, self._resolve(filters))

    def search_knowledge(
        self, query: str, k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[Hit]:
        """Hybrid (dense + BM25, RRF) search over the knowledge base."""
        if not query or not query.strip():
            raise RetrievalError("empty query")
        return self.knowledge.hybrid_search(
            query,
            self.text_encoder.encode([query])[0].tolist(),
            k,
            self._resolve(filters, "knowledge"),
        )
