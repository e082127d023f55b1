"""Knowledge corpus loader: a folder of Markdown / text files -> citable chunks.

Each Markdown file is one topic: an H1 title, sections (H2/H3) and a ``## Sources``
section with its references. Files are split by heading (LangChain
``MarkdownHeaderTextSplitter``), long sections further by size
(``RecursiveCharacterTextSplitter``). Every chunk keeps its file, title, heading path
and the file's references, so an answer can cite where a statement comes from. Chunk
ids are stable hashes of (file, heading, position): re-indexing replaces, never duplicates.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path

SOURCES_HEADING = re.compile(r"^##\s+(sources|references)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Chunk:
    """One citable piece of the knowledge base."""

    chunk_id: str
    text: str
    title: str
    heading: str
    source: str  # file path relative to the corpus root
    topic: str  # file stem, e.g. "pleural-effusion"
    references: str  # the file's sources, one per line

    def to_row(self) -> dict[str, str]:
        return asdict(self)


class CorpusError(ValueError):
    """The corpus folder is missing, empty or holds a file without a title."""


def _split_sources(text: str) -> tuple[str, str]:
    m = SOURCES_HEADING.search(text)
    if not m:
        return text, ""
    refs = [line.strip(" -*\t") for line in text[m.end() :].splitlines() if line.strip()]
    return text[: m.start()], "\n".join(refs)


def load_corpus(root: str | Path, chunk_size: int = 900, chunk_overlap: int = 120) -> list[Chunk]:
    """Chunk every ``.md`` / ``.txt`` file under ``root`` (README files excluded)."""
    from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"knowledge corpus folder not found: {root}")
    files = sorted(
        p for p in root.rglob("*") if p.suffix in (".md", ".txt") and p.stem.lower() != "readme"
    )
    if not files:
        raise CorpusError(f"no .md or .txt files in {root}")
    by_heading = MarkdownHeaderTextSplitter(
        headers_to_split_on=[("#", "h1"), ("##", "h2"), ("###", "h3")], strip_headers=True
    )
    by_size = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    chunks: list[Chunk] = []
    for path in files:
        rel = str(path.relative_to(root))
        body, references = _split_sources(path.read_text(encoding="utf-8"))
        title_match = re.search(r"^#\s+(.+)$", body, re.MULTILINE)
        if path.suffix == ".md" and not title_match:
            raise CorpusError(f"{rel}: a Markdown topic needs an H1 title")
        title = title_match.group(1).strip() if title_match else path.stem.replace("-", " ")
        sections = by_heading.split_text(body) if path.suffix == ".md" else []
        pieces = [
            (s.page_content, " > ".join(v for k, v in sorted(s.metadata.items()) if k != "h1"))
            for s in sections
        ]
        if path.suffix != ".md":
            pieces = [(body, "")]
        for section_text, heading in pieces:
            for i, text in enumerate(by_size.split_text(section_text)):
                text = text.strip()
                if not text:
                    continue
                digest = hashlib.sha256(f"{rel}|{heading}|{i}".encode()).hexdigest()[:24]
                chunks.append(Chunk(digest, text, title, heading, rel, path.stem, references))
    return chunks
