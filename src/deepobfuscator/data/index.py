"""The in-memory description of a labelled image dataset, shared by every loader."""
from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np


class DataError(ValueError):
    """Bad or missing dataset input; the message names the file (and line) at fault."""


def read_lines(path: Path, missing_hint: str = "") -> list[str]:
    """A UTF-8 text file's lines (any line ending); DataError naming the file if absent or not text."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="strict").splitlines()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found{missing_hint}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file ({exc})") from exc


@dataclass(frozen=True)
class AttributeSpec:
    """One predicted attribute: binary (BCE, one logit) or multi-class (CE, one logit per class)."""

    name: str
    num_classes: int = 2
    classes: tuple[str, ...] | None = None

    @property
    def num_outputs(self) -> int:
        """Logits this attribute takes in a classifier's output."""
        return 1 if self.num_classes == 2 else self.num_classes

    @property
    def binary(self) -> bool:
        """True for two-class attributes."""
        return self.num_classes == 2


def stack_labels(labels: Mapping[str, np.ndarray], names: list[str], count: int) -> np.ndarray:
    """The label vectors of ``names`` (each ``[count]``) as an int64 matrix ``[count, len(names)]``."""
    if not names:
        return np.zeros((count, 0), dtype=np.int64)
    return np.stack([labels[n] for n in names], axis=1).astype(np.int64)


@dataclass
class DatasetIndex:
    """Image files with per-image integer labels, optional identities and official partition."""

    name: str
    root: Path
    files: list[Path]
    labels: dict[str, np.ndarray]
    specs: dict[str, AttributeSpec]
    identities: np.ndarray | None = None
    partition: np.ndarray | None = None  # 0 train, 1 val, 2 test (official), or None
    source_files: list[Path] = field(default_factory=list)  # label files, for provenance
    notes: list[str] = field(default_factory=list)  # what the loader left out and why (conflicts, missing labels)
    stratify: np.ndarray | None = None  # optional per-image group label the seeded split stratifies by

    def __len__(self) -> int:
        return len(self.files)

    def fingerprint(self) -> str:
        """A short stable hash of the file list (relative paths), for caches and split checks."""
        h = hashlib.sha1()
        for path in self.files:
            h.update(str(path.relative_to(self.root)).encode())
            h.update(b"\0")
        return h.hexdigest()[:16]

    def select(self, names: list[str], role: str) -> list[AttributeSpec]:
        """The specs of ``names``, with a close-match suggestion for unknown ones."""
        out = []
        for name in names:
            if name not in self.specs:
                hint = difflib.get_close_matches(name, list(self.specs), n=3, cutoff=0.5)
                known = ", ".join(hint) if hint else ", ".join(list(self.specs)[:10]) + ", ..."
                where = self.source_files[0] if self.source_files else self.root
                raise DataError(
                    f"unknown {role} attribute '{name}' in dataset '{self.name}' ({where}); "
                    + (f"did you mean: {known}?" if hint else f"known attributes include: {known}")
                )
            out.append(self.specs[name])
        return out

    def label_matrix(self, names: list[str]) -> np.ndarray:
        """Labels of ``names`` as an int64 matrix ``[N, len(names)]``."""
        return stack_labels(self.labels, names, len(self))

    def subset(self, count: int | None) -> "DatasetIndex":
        """The first ``count`` images (all if None)."""
        if count is None or count >= len(self):
            return self
        return DatasetIndex(
            name=self.name,
            root=self.root,
            files=self.files[:count],
            labels={k: v[:count] for k, v in self.labels.items()},
            specs=self.specs,
            identities=None if self.identities is None else self.identities[:count],
            partition=None if self.partition is None else self.partition[:count],
            source_files=self.source_files,
            notes=self.notes,
            stratify=None if self.stratify is None else self.stratify[:count],
        )
