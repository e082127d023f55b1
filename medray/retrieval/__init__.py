"""Similar-case and knowledge retrieval in Milvus (pymilvus; Milvus Lite by default)."""

from medray.retrieval.collection import Hit, build_filter
from medray.retrieval.connection import MilvusSettings, RetrievalError, TLSSettings, connect
from medray.retrieval.corpus import Chunk, CorpusError, load_corpus
from medray.retrieval.store import CaseStore, KnowledgeStore

__all__ = [
    "CaseStore",
    "Chunk",
    "CorpusError",
    "Hit",
    "KnowledgeStore",
    "MilvusSettings",
    "RetrievalError",
    "TLSSettings",
    "build_filter",
    "connect",
    "load_corpus",
]
