"""Synthetic, seeded benchmark data: a glossary of real term files and a table of subscribers.

The same seed always gives the same files and rows, so two runs (or two machines) measure the
same work. Subscribers are bulk-inserted (executemany on SQLite, COPY on PostgreSQL).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from digest.model.weeks import IsoWeek
from digest.store.db import subscribers

__all__ = ["insert_subscribers", "subscriber_email", "write_glossary"]

DEFAULT_SEED = 20260417


def _split(text: str, sep: str | None = None) -> list[str]:
    return text.split(sep)


_ADJECTIVES = _split("""sparse dense latent causal masked residual contrastive federated recurrent
convolutional probabilistic generative discriminative adversarial hierarchical multimodal
quantized distilled supervised unsupervised bayesian stochastic deterministic autoregressive
bidirectional gated linear nonlinear variational robust interpretable scalable differentiable
symbolic neural retrieval semantic lexical temporal spatial graph kernel ensemble
""")
_NOUNS = _split("""attention embedding encoder decoder tokenizer optimizer gradient network transformer
sampling inference alignment regularization normalization pruning distillation search ranking
memory routing pooling dropout clustering classifier regression policy reward agent planner
prompting tuning adapter retriever reranker diffusion flow benchmark dataset loss objective
schedule curriculum calibration hashing indexing compression quantization parser
""")
_CATEGORIES = [
    "Fundamentals",
    "Architectures",
    "Training",
    "Evaluation",
    "Language Models",
    "Safety",
    "Data",
    "Applications",
    "Infrastructure",
    "Ethics",
]
_DIFFICULTIES = ["beginner", "intermediate", "advanced"]
_WORDS = _split("""model data layer weight value vector token input output signal pattern example
system method step result error score batch training inference feature representation
parameter function probability distribution sequence context window budget cost latency
memory hardware accuracy quality benchmark human feedback label task domain language image
text audio prediction decision threshold update iteration trade-off baseline approach
researcher engineer practitioner team product user service pipeline stage component
""")
_VERBS = _split("""learns predicts combines reduces improves measures compares stores selects
transforms encodes decodes ranks filters weighs scales updates balances limits extends
""")
_LINKERS = _split("""because while although so that when unless whereas and but""")


def _sentence(rng: random.Random, mention: str | None = None) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 9))]
    words.insert(rng.randint(1, 3), rng.choice(_VERBS))
    words.insert(rng.randint(4, len(words)), rng.choice(_LINKERS))
    if mention:
        words.insert(rng.randint(1, len(words)), mention)
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _paragraph(rng: random.Random, sentences: int, mentions: list[str]) -> str:
    parts = []
    for _ in range(sentences):
        parts.append(_sentence(rng, mentions.pop() if mentions and rng.random() < 0.5 else None))
    return " ".join(parts)


def _names(rng: random.Random, count: int) -> list[str]:
    """`count` distinct multi-word titles, as unique ignoring case as the glossary demands."""
    seen: set[str] = set()
    titles: list[str] = []
    while len(titles) < count:
        words = [rng.choice(_ADJECTIVES), rng.choice(_ADJECTIVES), rng.choice(_NOUNS)]
        if rng.random() < 0.5 or len(seen) > 0.6 * len(_ADJECTIVES) ** 2 * len(_NOUNS):
            words.insert(0, rng.choice(_ADJECTIVES))
        title = " ".join(words).title()
        if words[0] == words[1] or title.casefold() in seen:
            continue
        seen.add(title.casefold())
        titles.append(title)
    return titles


def _slug(title: str) -> str:
    return title.lower().replace(" ", "-")


def write_glossary(folder: Path, count: int, seed: int = DEFAULT_SEED) -> Path:
    """Write `count` valid term files into `folder` and return it.

    Each term has ~250 words in the three required sections (with a list, emphasis, inline code
    and a link), mentions of other terms' titles in its text, 2–6 related links, 1–2 aliases
    (one of them Dutch) and 1–3 sources, like the hand-written terms in `terms/`.
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    titles = _names(rng, count)
    slugs = [_slug(t) for t in titles]
    taken = {t.casefold() for t in titles} | {s.casefold() for s in slugs}
    start = IsoWeek(2020, 1)
    for i, (title, slug) in enumerate(zip(titles, slugs, strict=True)):
        others = [j for j in rng.sample(range(count), min(count, 8)) if j != i]
        related = [slugs[j] for j in others[: rng.randint(2, 6)]] if count > 1 else []
        mentions = [titles[j].lower() for j in rng.sample(range(count), min(count, 3))]
        aliases = []
        for kind in ("en", "nl")[: rng.randint(1, 2)]:
            base = "".join(w[0] for w in title.split()).upper() if kind == "en" else title.lower()
            name = f"{base}-{i}" if kind == "en" else f"{base} (nl {i})"
            if name.casefold() not in taken:
                taken.add(name.casefold())
                aliases.append((name, kind))
        alias_yaml = "".join(
            f"  - name: {name}\n" + (f"    lang: {lang}\n" if lang == "nl" else "")
            for name, lang in aliases
        )
        sources = "".join(
            f"  - title: {rng.choice(_WORDS).title()} paper {k + 1} on {title}\n"
            f"    url: https://example.org/papers/{slug}/{k + 1}\n"
            for k in range(rng.randint(1, 3))
        )
        how = "\n".join(f"- **{rng.choice(_WORDS)}** — {_sentence(rng)}" for _ in range(4))
        body = (
            "## Why it matters\n\n"
            f"{_paragraph(rng, 5, mentions)}\n\n"
            f"{_paragraph(rng, 4, mentions)}\n\n"
            "## How it works\n\n"
            f"{_paragraph(rng, 4, mentions)} The core step is `{rng.choice(_VERBS)}(x)`:\n\n"
            f"{how}\n\n"
            "## Example\n\n"
            f"{_paragraph(rng, 2, mentions)}\n\n"
            f"{_paragraph(rng, 4, mentions)} See [the overview](https://example.org/{slug}) "
            "for a worked case.\n"
        )
        week = start + (i % 300)
        definition = " ".join(_sentence(rng) for _ in range(2))
        text = (
            "---\n"
            f"title: {title}\n"
            f"summary: {_sentence(rng)}\n"
            f"definition: >-\n  {definition}\n"
            + ("aliases:\n" + alias_yaml if aliases else "aliases: []\n")
            + f"category: {_CATEGORIES[rng.randrange(len(_CATEGORIES))]}\n"
            f"difficulty: {rng.choice(_DIFFICULTIES)}\n"
            f"added: {week}\n"
            "related:\n"
            + "".join(f"  - {r}\n" for r in related)
            + "sources:\n"
            + sources
            + "---\n\n"
            + body
        )
        (folder / f"{slug}.md").write_text(text, encoding="utf-8")
    return folder


# --------------------------------------------------------------------------- subscribers

_FIRST = _split("Ann Bram Chen Dana Eva Femke Gita Hugo Ines Joost Kai Lena Mo Noor Olaf Pia")
_LAST = _split(
    "de Vries|Jansen|Bakker|Visser|Smit|Meijer|Mulder|O'Brien|Müller|García|Ødegaard", "|"
)


def subscriber_email(i: int) -> str:
    return f"reader{i:07d}@mail{i % 97:02d}.example.org"


def _rows(rng: random.Random, start: int, stop: int) -> Iterator[tuple[str, str | None]]:
    for i in range(start, stop):
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}" if rng.random() < 0.6 else None
        yield subscriber_email(i), name


def insert_subscribers(
    engine: Engine, count: int, seed: int = DEFAULT_SEED, chunk: int = 50_000
) -> datetime:
    """Insert `count` active, confirmed subscribers; returns when they confirmed.

    60% have a display name (some with apostrophes and non-ASCII letters). The rows go in
    through the driver's fastest bulk path, in chunks, so even a million never sit in memory.
    """
    rng = random.Random(seed)
    confirmed = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    created = confirmed - timedelta(minutes=5)
    columns = ("email", "name", "status", "source", "created_at", "confirmed_at", "updated_at")
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        if engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY subscribers ({', '.join(columns)}) FROM STDIN") as copy:
                for email, name in _rows(rng, 0, count):
                    copy.write_row((email, name, "active", "import", created, confirmed, confirmed))
            # As after any bulk load: autovacuum would do this within a minute, and until it
            # does the planner believes the table is empty and picks plans for a tiny table.
            cursor.execute("ANALYZE subscribers")
        else:
            # The column type's own bind processor, so the stored text is what SQLAlchemy
            # writes and reads back (SQLite has no datetime type of its own).
            process = subscribers.c.created_at.type.bind_processor(engine.dialect)
            assert process is not None
            at_created, at_confirmed = process(created), process(confirmed)
            sql = (
                f"INSERT INTO subscribers ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' * len(columns))})"
            )
            for first in range(0, count, chunk):
                rows = [
                    (email, name, "active", "import", at_created, at_confirmed, at_confirmed)
                    for email, name in _rows(rng, first, min(first + chunk, count))
                ]
                cursor.executemany(sql, rows)
        raw.commit()
    finally:
        raw.close()
    return confirmed
