"""Re-identification test (automating the paper's human study): pick, among four raw images, the one most
similar to a reconstruction. ``same_image``: the query's own raw image is a candidate; ``same_person``:
a *different* image of the same identity is. Chance is 25%; candidate order and ties are random."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import PreparedData, images_to_tensor
from ..losses import MSSSIMSettings, ms_ssim
from ..metrics import rate_report
from .features import images_to_dataset_tensor

CANDIDATES = 4
CHANCE = 1.0 / CANDIDATES


@dataclass
class ReidTrials:
    """For each usable query: its position among the queries, four candidate dataset rows and the true one."""

    variant: str
    query: np.ndarray  # int64 [T] positions into the query list
    candidates: np.ndarray  # int64 [T, 4] dataset rows
    answer: np.ndarray  # int64 [T] column of the true candidate

    def __len__(self) -> int:
        return len(self.query)

    def head(self, n_queries: int) -> "ReidTrials":
        """The trials whose query is among the first ``n_queries`` queries."""
        keep = self.query < n_queries
        return ReidTrials(self.variant, self.query[keep], self.candidates[keep], self.answer[keep])


def make_trials(query_indices: np.ndarray, gallery_size: int, identities: np.ndarray | None, variant: str,
                seed: int) -> ReidTrials:
    """Draw candidates from the whole dataset (the attacker's gallery of raw images).

    Distractors never share the query's identity when identities are known. ``same_person`` needs
    identities and uses only queries whose identity has another image; without identities it is empty.
    """
    if variant not in ("same_image", "same_person"):
        raise ValueError(f"unknown re-identification variant {variant!r}")
    rng = np.random.default_rng([seed, 0 if variant == "same_image" else 1])
    by_identity: dict[int, np.ndarray] = {}
    if identities is not None:
        order = np.argsort(identities, kind="stable")
        ids, starts = np.unique(identities[order], return_index=True)
        for ident, group in zip(ids, np.split(order, starts[1:])):
            by_identity[int(ident)] = group
    queries, rows, answers = [], [], []
    for pos, q in enumerate(np.asarray(query_indices, dtype=np.int64)):
        if variant == "same_image":
            truth = int(q)
        else:
            if identities is None:
                continue
            others = by_identity[int(identities[q])]
            others = others[others != q]
            if len(others) == 0:
                continue
            truth = int(rng.choice(others))
        distractors: list[int] = []
        for _ in range(1000):  # rejection sampling; the gallery is far larger than 4 in practice
            cand = int(rng.integers(gallery_size))
            if cand in (int(q), truth) or cand in distractors:
                continue
            if identities is not None and identities[cand] == identities[q]:
                continue
            distractors.append(cand)
            if len(distractors) == CANDIDATES - 1:
                break
        if len(distractors) < CANDIDATES - 1:
            continue
        column = int(rng.integers(CANDIDATES))
        cands = distractors[:column] + [truth] + distractors[column:]
        queries.append(pos)
        rows.append(cands)
        answers.append(column)
    return ReidTrials(variant, np.asarray(queries, dtype=np.int64),
                      np.asarray(rows, dtype=np.int64).reshape(-1, CANDIDATES), np.asarray(answers, dtype=np.int64))


def similarity(recon: torch.Tensor, candidates: torch.Tensor, kind: str, settings: MSSSIMSettings) -> torch.Tensor:
    """Similarity ``[N]`` of reconstructions and candidates: MS-SSIM (shifted terms, so it never ties at 0)
    or negative MSE."""
    if kind == "msssim":
        return ms_ssim(recon, candidates, settings, mapping="shifted")
    if kind == "mse":
        return -(recon - candidates).pow(2).flatten(1).mean(1)
    raise ValueError(f"unknown re-identification similarity {kind!r} (msssim or mse)")


def run_trials(recons: np.ndarray, trials: ReidTrials, data: PreparedData, kind: str, settings: MSSSIMSettings,
               seed: int) -> dict:
    """Top-1 rate of picking the true candidate; ``recons`` are uint8 ``[Q, H, W, 3]`` aligned with the queries."""
    trials = trials.head(len(recons))
    if len(trials) == 0:
        return {**rate_report(0, 0), "chance": CHANCE}
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, len(trials), 64):
        q = trials.query[start:start + 64]
        cands = trials.candidates[start:start + 64]
        recon = images_to_tensor(recons[q])
        gallery = images_to_dataset_tensor(data, cands.reshape(-1))
        scores = similarity(recon.repeat_interleave(CANDIDATES, 0), gallery, kind, settings).view(-1, CANDIDATES)
        scores = scores.double().numpy()
        for i, row in enumerate(scores):
            best = np.flatnonzero(row >= row.max() - 1e-12)
            hits += int(rng.choice(best) == trials.answer[start + i])
    return {**rate_report(hits, len(trials)), "chance": CHANCE}
