"""TwitterAAE-style text data: the file format, a tweet tokeniser, a vocabulary and padded batches.

Format (see docs/text.md): UTF-8, tab-separated. The first non-blank line is a header naming the
columns; the last column is ``text``, the others are label columns (e.g. ``mention``, ``dialect``).
Each further line holds the label values, then the tweet (a tab inside the tweet stays part of the
text). A data root is such a file, or a folder with ``train.tsv``, ``dev.tsv`` (or ``val.tsv``) and
``test.tsv`` (the official split), or a folder with one ``data.tsv`` (a seeded split is made).
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..data.index import AttributeSpec, DataError, stack_labels
from ..utils import atomic_write_json

TEXT_COLUMN = "text"
PAD, UNK, URL, USER = "<pad>", "<unk>", "<url>", "<user>"
SPLIT_FILES = {"train": ("train.tsv",), "val": ("dev.tsv", "val.tsv"), "test": ("test.tsv",)}
SINGLE_FILE = "data.tsv"
_TOKEN = re.compile(r"https?://\S+|www\.\S+|@\w+|#\w+|\w+(?:'\w+)*|[^\w\s]", re.UNICODE)


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Tweet tokens: URLs -> ``<url>``, @-mentions -> ``<user>``, hashtags and words kept, other symbols one each."""
    out = []
    for tok in _TOKEN.findall(text):
        if tok.startswith(("http://", "https://", "www.")):
            out.append(URL)
        elif tok.startswith("@") and len(tok) > 1:
            out.append(USER)
        else:
            out.append(tok.lower() if lowercase else tok)
    return out


@dataclass
class Vocabulary:
    """Token list; id 0 is ``<pad>``, id 1 is ``<unk>`` (every token not in the list)."""

    tokens: list[str]

    def __post_init__(self) -> None:
        if self.tokens[:2] != [PAD, UNK]:
            raise DataError(f"vocabulary must start with {PAD}, {UNK}; found {self.tokens[:2]}")
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, token_lists: list[list[str]], min_freq: int = 1, max_size: int | None = None) -> "Vocabulary":
        """Tokens seen at least ``min_freq`` times, most frequent first (ties alphabetical), capped at ``max_size``."""
        counts = Counter(t for tokens in token_lists for t in tokens)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq and t not in (PAD, UNK)),
                        key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - 2)]
        return cls([PAD, UNK] + ranked)

    def encode(self, tokens: list[str]) -> list[int]:
        """Ids of ``tokens`` (``<unk>`` for unknown ones)."""
        return [self._ids.get(t, 1) for t in tokens]

    def save(self, path: Path) -> None:
        """Write the token list as JSON."""
        atomic_write_json(Path(path), {"tokens": self.tokens})

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        """Read a vocabulary written by :meth:`save`."""
        try:
            return cls(list(json.loads(Path(path).read_text())["tokens"]))
        except FileNotFoundError as exc:
            raise DataError(f"{path}: vocabulary file not found") from exc
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a vocabulary file ({exc})") from exc


@dataclass
class TextCorpus:
    """Texts with per-example integer labels; ``partition`` (0/1/2) when the root has split files."""

    root: Path
    texts: list[str]
    labels: dict[str, np.ndarray]
    specs: dict[str, AttributeSpec]
    partition: np.ndarray | None = None
    source_files: list[Path] = field(default_factory=list)
    name: str = "text"

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """A short stable hash of the texts, for split checks."""
        h = hashlib.sha1()
        for text in self.texts:
            h.update(text.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()[:16]

    def select(self, names: list[str], role: str) -> list[AttributeSpec]:
        """The specs of ``names``; unknown or single-class columns are errors naming the file."""
        where = self.source_files[0] if self.source_files else self.root
        out = []
        for name in names:
            if name not in self.specs:
                hint = difflib.get_close_matches(name, list(self.specs), n=1)
                raise DataError(f"{where}: no {role} label column '{name}' (columns: {', '.join(self.specs)})"
                                + (f"; did you mean '{hint[0]}'?" if hint else ""))
            if self.specs[name].num_classes < 2:
                raise DataError(f"{where}: label column '{name}' has a single value "
                                f"{self.specs[name].classes}; nothing to predict")
            out.append(self.specs[name])
        return out

    def label_matrix(self, names: list[str]) -> np.ndarray:
        """Labels of ``names`` as int64 ``[N, len(names)]``."""
        return stack_labels(self.labels, names, len(self))


def read_table(path: Path) -> tuple[list[str], list[str], list[list[str]]]:
    """(label column names, texts, label values per example) of one file in the format above."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="strict").splitlines()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc})") from exc
    header: list[str] | None = None
    texts: list[str] = []
    values: list[list[str]] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if header is None:
            header = [c.strip() for c in line.split("\t")]
            if len(header) < 2 or header[-1] != TEXT_COLUMN or not all(header):
                raise DataError(f"{path}:{lineno}: header must name the label columns, then '{TEXT_COLUMN}' last "
                                f"(tab-separated), found {line.strip()[:80]!r}")
            if len(set(header)) != len(header):
                raise DataError(f"{path}:{lineno}: repeated column name in header {header}")
            continue
        parts = line.split("\t", len(header) - 1)
        if len(parts) != len(header):
            raise DataError(f"{path}:{lineno}: expected {len(header) - 1} label value(s) and the text, "
                            f"tab-separated; found {len(parts)} field(s)")
        labels = [p.strip() for p in parts[:-1]]
        if not all(labels):
            raise DataError(f"{path}:{lineno}: empty label value")
        if not parts[-1].strip():
            raise DataError(f"{path}:{lineno}: empty text")
        texts.append(parts[-1].strip())
        values.append(labels)
    if header is None:
        raise DataError(f"{path}: empty file (expected a header line and one example per line)")
    if not texts:
        raise DataError(f"{path}: header but no examples")
    return header[:-1], texts, values


def _class_order(values: set[str]) -> tuple[str, ...]:
    try:
        return tuple(sorted(values, key=lambda v: (float(v), v)))
    except ValueError:
        return tuple(sorted(values))


def find_files(root: Path) -> tuple[list[Path], bool]:
    """The data files of ``root`` and whether they are official train/val/test files."""
    if root.is_file():
        return [root], False
    if not root.is_dir():
        raise DataError(f"{root}: no such file or folder")
    found = {k: next((root / n for n in names if (root / n).is_file()), None) for k, names in SPLIT_FILES.items()}
    if all(found.values()):
        return [found["train"], found["val"], found["test"]], True  # type: ignore[list-item]
    if any(found.values()):
        missing = [SPLIT_FILES[k][0] for k, v in found.items() if v is None]
        raise DataError(f"{root}: split files incomplete, missing {', '.join(missing)}")
    if (root / SINGLE_FILE).is_file():
        return [root / SINGLE_FILE], False
    raise DataError(f"{root}: no text data (expected {SINGLE_FILE}, or train.tsv + dev.tsv + test.tsv)")


def load_text(root: str | Path, max_examples: int | None = None) -> TextCorpus:
    """Read a text data root into a :class:`TextCorpus` (classes per column in sorted order)."""
    root = Path(root).expanduser().resolve()
    files, official = find_files(root)
    columns: list[str] | None = None
    texts: list[str] = []
    values: list[list[str]] = []
    partition: list[int] = []
    for part, path in enumerate(files):
        cols, t, v = read_table(path)
        if columns is not None and cols != columns:
            raise DataError(f"{path}:1: columns {cols} differ from {files[0].name}'s {columns}")
        columns = cols
        if max_examples is not None:
            t, v = t[:max_examples], v[:max_examples]
        texts += t
        values += v
        partition += [part] * len(t)
    assert columns is not None
    labels, specs = {}, {}
    for j, name in enumerate(columns):
        column = [row[j] for row in values]
        classes = _class_order(set(column))
        index = {c: i for i, c in enumerate(classes)}
        labels[name] = np.asarray([index[c] for c in column], dtype=np.int64)
        specs[name] = AttributeSpec(name, len(classes), classes)
    return TextCorpus(root, texts, labels, specs, np.asarray(partition, dtype=np.int64) if official else None, files)


def encode(token_lists: list[list[str]], vocab: Vocabulary, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded ids ``int64 [N, max_len]`` (truncated) and lengths ``[N]`` (at least 1)."""
    ids = np.zeros((len(token_lists), max_len), dtype=np.int64)
    lengths = np.ones(len(token_lists), dtype=np.int64)
    for i, tokens in enumerate(token_lists):
        row = vocab.encode(tokens[:max_len]) or [1]
        ids[i, : len(row)] = row
        lengths[i] = len(row)
    return ids, lengths


def bag_of_words(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Multi-hot ``[B, V]`` of the ids in ``tokens`` (``<pad>`` and ``<unk>`` excluded)."""
    bow = torch.zeros(tokens.shape[0], vocab_size, device=tokens.device)
    bow.scatter_(1, tokens, 1.0)
    bow[:, :2] = 0.0
    return bow


@dataclass
class TextBatch:
    """Token ids ``[B, T]`` (T = longest in batch), lengths (CPU), targets, and corpus indices."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    task: torch.Tensor
    private: torch.Tensor
    index: np.ndarray

    def to(self, device: str) -> "TextBatch":
        """Move ids and targets to ``device`` (lengths stay on the CPU, as packing needs)."""
        if device == "cpu":
            return self
        return TextBatch(self.tokens.to(device), self.lengths, self.task.to(device), self.private.to(device),
                         self.index)


@dataclass
class TextBatches:
    """Batches of a subset, shuffled per epoch from ``(seed, epoch)``."""

    ids: np.ndarray
    lengths: np.ndarray
    task: np.ndarray
    private: np.ndarray
    indices: np.ndarray
    batch_size: int
    shuffle: bool = False
    seed: int = 0
    drop_last: bool = False

    def __post_init__(self) -> None:
        if len(self.indices) == 0:
            raise ValueError("TextBatches needs at least one example")
        self.drop_last = self.drop_last and len(self.indices) > self.batch_size

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[TextBatch]:
        """The batches of ``epoch`` from batch number ``start`` on."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.indices) if self.shuffle else self.indices
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            lengths = self.lengths[idx]
            yield TextBatch(torch.from_numpy(self.ids[idx, : int(lengths.max())].copy()),
                            torch.from_numpy(lengths.copy()), torch.from_numpy(self.task[idx]),
                            torch.from_numpy(self.private[idx]), idx)
