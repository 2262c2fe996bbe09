"""Where an attack's images come from: the run's own split, another root (freshly split), or public data for
the attackers; attributes a dataset does not label (or labels with other classes) are skipped with a note."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..data import AttributeSpec, PreparedData, load_index, prepare_data
from ..runs import RunDir, open_run_data


@dataclass
class AttackSources:
    """Where evaluation and attacker-training images come from (default: the run's own dataset and split)."""

    data_root: str | None = None  # evaluate on another root (fresh seeded split)
    dataset: str | None = None  # loader name for data_root (default: the run's)
    attacker_root: str | None = None  # the realistic attacker: train on this root's train split
    attacker_dataset: str | None = None  # loader name for attacker_root (default: the run's)
    max_images: int | None = None  # use only the first N images of data_root / attacker_root


@dataclass
class Source:
    """A dataset opened for attacking, with what was left out and why."""

    data: PreparedData
    dataset: str
    root: str
    notes: list[str]


def open_source(run: RunDir, cfg: Any, dataset: str | None, root: str | None, max_images: int | None,
                progress: bool) -> Source:
    """The run's own data and split, or another root freshly split, keeping only the run's attributes it labels."""
    if root is None:
        if dataset is not None and dataset != cfg.data.dataset:
            raise ValueError(f"--dataset {dataset} needs a dataset root (--data DIR) to read it from")
        data, _ = open_run_data(run, cfg, progress=progress)
        return Source(data, cfg.data.dataset, str(cfg.data.root), [])
    name = dataset or cfg.data.dataset
    index = load_index(name, root, max_images, cfg.data.cache_dir)
    notes = []
    keep: dict[str, list[str]] = {}
    for role in ("task", "private"):
        wanted = list(getattr(cfg.data, role))
        keep[role] = [a for a in wanted if a in index.specs]
        missing = [a for a in wanted if a not in index.specs]
        if missing:
            notes.append(f"{name} at {index.root} has no labels for {', '.join(missing)}; skipped")
    data_cfg = replace(cfg.data, dataset=name, root=str(index.root), task=keep["task"], private=keep["private"],
                       max_images=max_images)
    data, _ = prepare_data(data_cfg, index=index, progress=progress)
    return Source(data, name, str(index.root), notes)


def _same_spec(a: AttributeSpec, b: AttributeSpec) -> bool:
    return a.num_classes == b.num_classes and (a.classes is None or b.classes is None or a.classes == b.classes)


def _spec_in(data: PreparedData, spec: AttributeSpec) -> AttributeSpec | None:
    for other in data.task_specs + data.private_specs:
        if other.name == spec.name:
            return other
    return None


def usable_specs(specs: list[AttributeSpec], sources: list[Source], notes: list[str]) -> list[AttributeSpec]:
    """Specs labelled in every source with the run's class count and class names (others noted and skipped)."""
    out = []
    for spec in specs:
        found = [_spec_in(s.data, spec) for s in sources]
        if any(f is None for f in found):
            continue  # already noted when the source was opened
        bad = [s for s, f in zip(sources, found) if not _same_spec(spec, f)]
        if bad:
            notes.append(f"{spec.name}: classes in {bad[0].dataset} ({bad[0].root}) differ from the run's; skipped")
            continue
        out.append(spec)
    return out
