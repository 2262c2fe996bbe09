"""The adversarial cycle for text (paper section 5.2): Algorithm 1 without the reconstruction terms.

Stages: ``pretrain`` (O+C on L(C)), ``attacker`` (AC on L(AC), O frozen), ``adversarial`` (batches
cycle through phase 1: O <- L(C) - lambda1 L(AC); phase 2: AC <- L(AC); phase 3: C <- L(C)), then
``attack``: a fresh adversary and the bag-of-words reconstruction attacker are trained on the frozen
final O and reported on the test split (accuracy; F1 of the predicted word set).
The run directory follows the image runs: ``config.yaml``, ``split.json``, ``vocab.json``,
``checkpoints/`` (resumable per epoch, ``final.safetensors``), ``metrics.jsonl``, ``train_summary.json``.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..config import ConfigError, save_config
from ..data.index import AttributeSpec, DataError
from ..data.splits import SPLITS, make_split
from ..losses import ATTRIBUTE_OBJECTIVES, attribute_defence_loss, attribute_loss, predictions
from ..metrics import majority_rate
from ..runs import RunDir, spec_to_dict
from ..training.staged import GradSync, Position, StagedTrainer
from ..training.start import begin_run
from ..utils import atomic_write_json, git_commit, resolve_device
from .config import TextRunConfig, load_text_config
from .data import TextBatch, TextBatches, TextCorpus, Vocabulary, bag_of_words, encode, load_text, tokenize
from .models import BagOfWordsReconstructor, LSTMClassifier, TextObfuscator

STAGES = ("pretrain", "attacker", "adversarial", "attack")
PHASES_BY_DEFENCE = {"attributes": (1, 2, 3), "none": (2, 3)}
MODULES = ("obfuscator", "classifier", "adversary", "fresh_adversary", "bow")
BASELINE_K = (1, 2, 3, 5, 10, 20)


@dataclass
class TextData:
    """Encoded corpus, targets and split of a text run."""

    corpus: TextCorpus
    vocab: Vocabulary
    ids: np.ndarray
    lengths: np.ndarray
    task_specs: list[AttributeSpec]
    private_specs: list[AttributeSpec]
    task: np.ndarray
    private: np.ndarray
    split: dict[str, np.ndarray]

    def batches(self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False, limit: int | None = None) -> TextBatches:
        """Batches of one split (optionally only its first ``limit`` examples)."""
        idx = self.split[split] if limit is None else self.split[split][:limit]
        return TextBatches(self.ids, self.lengths, self.task, self.private, idx, batch_size, shuffle, seed, drop_last)


def build_text_modules(cfg: TextRunConfig, vocab_size: int, task_specs: list[AttributeSpec],
                       private_specs: list[AttributeSpec]) -> dict[str, nn.Module]:
    """Fresh O, C, AC, a fresh adversary and the bag-of-words attacker (seeded from ``train.seed``)."""
    torch.manual_seed(cfg.train.seed)
    m = cfg.model
    obf = TextObfuscator(vocab_size, m.embedding_dim, m.hidden)

    def clf(specs: list[AttributeSpec]) -> nn.Module:
        return LSTMClassifier(obf.out_dim, sum(s.num_outputs for s in specs), m.classifier_hidden,
                              m.classifier_layers, m.fc, m.dropout)

    return {"obfuscator": obf, "classifier": clf(task_specs), "adversary": clf(private_specs),
            "fresh_adversary": clf(private_specs),
            "bow": BagOfWordsReconstructor(obf.out_dim, vocab_size, m.bow_hidden)}


def _joint_labels(matrix: np.ndarray) -> np.ndarray:
    return np.unique(matrix, axis=0, return_inverse=True)[1].reshape(-1)


def prepare_text(cfg: TextRunConfig, run: RunDir | None = None) -> tuple[TextData, dict]:
    """Load, split (official files or seeded, stratified by the joint labels), tokenise and encode.

    With ``run`` holding ``split.json`` and ``vocab.json`` those are reused (and checked); otherwise
    the vocabulary is built from the training split.
    """
    if cfg.data.root is None:
        raise ConfigError("text runs need data.root (pass --data FILE_OR_FOLDER)")
    corpus = load_text(cfg.data.root, cfg.data.max_examples)
    task_specs = corpus.select(list(cfg.data.task), "intended")
    private_specs = corpus.select(list(cfg.data.private), "private")
    if not task_specs or not private_specs:
        raise ConfigError("text runs need at least one intended and one private label column")
    overlap = set(cfg.data.task) & set(cfg.data.private)
    if overlap:
        raise DataError(f"label column(s) {sorted(overlap)} are both intended and private")
    task, private = corpus.label_matrix(list(cfg.data.task)), corpus.label_matrix(list(cfg.data.private))
    if run is not None and run.split.is_file():
        split = json.loads(run.split.read_text())
        if split.get("fingerprint") != corpus.fingerprint():
            raise DataError(f"{run.split}: split was made for different texts than {corpus.root}")
    else:
        split = make_split(corpus, cfg.data.split_seed, cfg.data.split_fractions,  # type: ignore[arg-type]
                           stratify=_joint_labels(np.concatenate([task, private], axis=1)))
    parts = {k: np.asarray(split[k], dtype=np.int64) for k in SPLITS}
    tokens = [tokenize(t, cfg.data.lowercase) for t in corpus.texts]
    vocab_path = run.path / "vocab.json" if run is not None else None
    if vocab_path is not None and vocab_path.is_file():
        vocab = Vocabulary.load(vocab_path)
    else:
        vocab = Vocabulary.build([tokens[i] for i in parts["train"]], cfg.data.min_freq, cfg.data.max_vocab)
    ids, lengths = encode(tokens, vocab, cfg.data.max_len)
    return TextData(corpus, vocab, ids, lengths, task_specs, private_specs, task, private, parts), split


@dataclass
class F1Counts:
    """True positives, false positives, false negatives of a set prediction."""

    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate boolean ``pred`` against 0/1 ``target``."""
        t = target > 0.5
        self.tp += (pred & t).sum().item()
        self.fp += (pred & ~t).sum().item()
        self.fn += (~pred & t).sum().item()

    def as_dict(self) -> dict[str, float]:
        """Micro precision, recall and F1."""
        p = self.tp / max(self.tp + self.fp, 1.0)
        r = self.tp / max(self.tp + self.fn, 1.0)
        return {"f1": 2 * self.tp / max(2 * self.tp + self.fp + self.fn, 1.0), "precision": p, "recall": r}


def frequent_words_f1(data: TextData, split: str = "test") -> dict[str, float]:
    """Best micro-F1 of predicting the k most frequent training words for every example (a no-features baseline)."""
    def word_sets(idx: np.ndarray) -> list[np.ndarray]:
        return [np.unique(data.ids[i, : data.lengths[i]]) for i in idx]

    train_sets = [s[s > 1] for s in word_sets(data.split["train"])]
    df = np.bincount(np.concatenate(train_sets) if train_sets else np.zeros(0, np.int64), minlength=len(data.vocab))
    df[:2] = 0
    rank = np.empty(len(df), dtype=np.int64)
    rank[np.argsort(-df, kind="stable")] = np.arange(len(df))
    test_sets = [s[s > 1] for s in word_sets(data.split[split])]
    total = sum(len(s) for s in test_sets)
    best = {"f1": 0.0, "k": 0}
    for k in BASELINE_K:
        k = min(k, int((df > 0).sum()))
        tp = sum(int((rank[s] < k).sum()) for s in test_sets)
        f1 = 2 * tp / max(2 * tp + (k * len(test_sets) - tp) + (total - tp), 1)
        if f1 > best["f1"]:
            best = {"f1": f1, "k": k}
    return best


class TextTrainer(StagedTrainer):
    """Runs the four text stages for one run directory; resumable at every epoch end."""

    stages = STAGES

    def __init__(self, cfg: TextRunConfig, run: RunDir, data: TextData, progress: bool = True,
                 device: str = "cpu", on_step: Callable[["TextTrainer", Position], None] | None = None) -> None:
        self.cfg, self.run, self.data = cfg, run, data
        self.progress, self.device, self.on_step = progress, device, on_step
        self.sync = GradSync()
        if cfg.privacy.defend not in PHASES_BY_DEFENCE:
            raise ConfigError(f"privacy.defend for text must be one of {sorted(PHASES_BY_DEFENCE)}, "
                              f"got {cfg.privacy.defend!r}")
        if cfg.privacy.attribute_objective not in ATTRIBUTE_OBJECTIVES:
            raise ConfigError(f"unknown privacy.attribute_objective {cfg.privacy.attribute_objective!r}")
        self.phases = PHASES_BY_DEFENCE[cfg.privacy.defend]
        self.modules = build_text_modules(cfg, len(data.vocab), data.task_specs, data.private_specs)
        for m in self.modules.values():
            m.to(device)
        t = cfg.train
        self.optimizers = {name: torch.optim.Adam(m.parameters(), t.lr if name in ("obfuscator", "classifier")
                                                  else t.lr_attacker) for name, m in self.modules.items()}
        self.position = Position()

    # ----------------------------------------------------------------- plumbing
    def module_dict(self) -> dict[str, nn.Module]:
        """O, C, AC, the fresh adversary and the bag-of-words attacker by name."""
        return self.modules

    def epochs(self, stage: int) -> int:
        """Configured epochs of ``stage``."""
        t = self.cfg.train
        return (t.epochs_pretrain, t.epochs_attacker, t.epochs_adversarial, t.epochs_attack)[stage]

    def train_loader(self, stage: int) -> TextBatches:
        """Shuffled training batches of ``stage`` (seeded per stage)."""
        t = self.cfg.train
        return self.data.batches("train", t.batch_size, shuffle=True, seed=t.seed * 1000 + stage, drop_last=True)

    def stage_step(self, stage: int) -> Callable[[TextBatch, int], dict[str, Any]]:
        """The update of ``stage`` for batch number ``step``."""
        return lambda batch, step: self.step(stage, batch, step)

    def validate(self, stage: int, split: str = "val") -> dict[str, Any]:
        """Metrics after an epoch of ``stage`` on (at most ``train.max_val_examples`` of) ``split``."""
        return self.evaluate(stage, split, self.cfg.train.max_val_examples)

    def final_metadata(self) -> dict[str, str]:
        """Run name and modality, stored with the final weights."""
        return {"run": self.cfg.name, "modality": "text"}

    def features(self, batch: TextBatch, grad: bool) -> torch.Tensor:
        """O(tokens); computed without a graph when O is not updated."""
        with contextlib.nullcontext() if grad else torch.no_grad():
            return self.modules["obfuscator"](batch.tokens, batch.lengths)

    def _frozen_rnn_backward(self) -> Any:
        # cuDNN cannot backpropagate through an LSTM in eval mode; the native kernels can
        return torch.backends.cudnn.flags(enabled=False) if self.device.startswith("cuda") else contextlib.nullcontext()

    # ----------------------------------------------------------------- steps
    def step_pretrain(self, batch: TextBatch) -> dict[str, float]:
        """O and C jointly on L(C)."""
        self.set_trainable("obfuscator", "classifier")
        loss = attribute_loss(self.modules["classifier"](self.features(batch, True), batch.lengths), batch.task,
                              self.data.task_specs)
        self._update(("obfuscator", "classifier"), loss)
        return {"L_C": loss.item()}

    def step_adversary(self, batch: TextBatch, name: str = "adversary") -> dict[str, float]:
        """AC (or the fresh adversary) on L(AC) over features of the fixed O."""
        self.set_trainable(name)
        loss = attribute_loss(self.modules[name](self.features(batch, False), batch.lengths), batch.private,
                              self.data.private_specs)
        self._update((name,), loss)
        return {"L_AC": loss.item()}

    def step_defend(self, batch: TextBatch) -> dict[str, float]:
        """Phase 1: O <- L(C) - lambda1 L(AC) (or + lambda1 * negative entropy of AC); C and AC fixed."""
        self.set_trainable("obfuscator")
        with self._frozen_rnn_backward():
            feats = self.features(batch, True)
            l_c = attribute_loss(self.modules["classifier"](feats, batch.lengths), batch.task, self.data.task_specs)
            logits = self.modules["adversary"](feats, batch.lengths)
            l_ac = attribute_loss(logits, batch.private, self.data.private_specs)
            loss = attribute_defence_loss(l_c, logits, l_ac, self.data.private_specs,
                                          self.cfg.privacy.attribute_objective, self.cfg.privacy.lambda1)
            self._update(("obfuscator",), loss)
        return {"L_C": l_c.item(), "L_AC": l_ac.item()}

    def step_classifier(self, batch: TextBatch) -> dict[str, float]:
        """Phase 3: C <- L(C) on features of the fixed O."""
        self.set_trainable("classifier")
        loss = attribute_loss(self.modules["classifier"](self.features(batch, False), batch.lengths), batch.task,
                              self.data.task_specs)
        self._update(("classifier",), loss)
        return {"L_C": loss.item()}

    def step_attack(self, batch: TextBatch) -> dict[str, float]:
        """Post-hoc attackers: a fresh adversary on L(AC) and the bag-of-words attacker on multi-label BCE."""
        self.set_trainable("fresh_adversary", "bow")
        feats = self.features(batch, False)
        l_ac = attribute_loss(self.modules["fresh_adversary"](feats, batch.lengths), batch.private,
                              self.data.private_specs)
        target = bag_of_words(batch.tokens, len(self.data.vocab))
        l_bow = F.binary_cross_entropy_with_logits(self.modules["bow"](feats, batch.lengths)[:, 2:], target[:, 2:])
        self._update(("fresh_adversary", "bow"), l_ac + l_bow)
        return {"L_AC_fresh": l_ac.item(), "L_BOW": l_bow.item()}

    def step(self, stage: int, batch: TextBatch, step: int) -> dict[str, float]:
        """The update of ``stage`` for batch number ``step``."""
        if stage == 0:
            return self.step_pretrain(batch)
        if stage == 1:
            return self.step_adversary(batch)
        if stage == 3:
            return self.step_attack(batch)
        phase = self.phases[step % len(self.phases)]
        fn = {1: self.step_defend, 2: self.step_adversary, 3: self.step_classifier}[phase]
        return {"phase": phase, **fn(batch)}

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, stage: int, split: str = "val", limit: int | None = None) -> dict[str, Any]:
        """C accuracy per intended label, AC (and, after the attack stage, fresh AC) accuracy, bag-of-words F1."""
        self.set_trainable()
        d = self.data
        n = 0
        correct = {k: torch.zeros(len(s)) for k, s in (("C_acc", d.task_specs), ("AC_acc", d.private_specs),
                                                       ("fresh_AC_acc", d.private_specs))}
        f1 = F1Counts()
        for batch in d.batches(split, self.cfg.train.eval_batch_size, limit=limit).epoch(0):
            batch = batch.to(self.device)
            feats = self.modules["obfuscator"](batch.tokens, batch.lengths)
            n += len(batch.index)
            heads = [("C_acc", "classifier", d.task_specs, batch.task)]
            if stage >= 1:
                heads.append(("AC_acc", "adversary", d.private_specs, batch.private))
            if stage >= 3:
                heads.append(("fresh_AC_acc", "fresh_adversary", d.private_specs, batch.private))
                present = self.modules["bow"](feats, batch.lengths) > 0
                present[:, :2] = False
                f1.add(present, bag_of_words(batch.tokens, len(d.vocab)))
            for key, name, specs, target in heads:
                pred = predictions(self.modules[name](feats, batch.lengths), specs)
                correct[key] += (pred == target).sum(0).float().cpu()
        out: dict[str, Any] = {"C_acc": {s.name: correct["C_acc"][i].item() / n for i, s in enumerate(d.task_specs)}}
        if stage >= 1:
            out["AC_acc"] = {s.name: correct["AC_acc"][i].item() / n for i, s in enumerate(d.private_specs)}
        if stage >= 3:
            out["fresh_AC_acc"] = {s.name: correct["fresh_AC_acc"][i].item() / n for i, s in enumerate(d.private_specs)}
            out["bow"] = f1.as_dict()
        return out

    def summarize(self) -> dict[str, Any]:
        """Test-split results with majority rates and the frequent-words F1 baseline; written to train_summary.json."""
        d = self.data
        idx = d.split["test"]
        summary = {
            "run": str(self.run.path), "modality": "text", "method": self.cfg.method,
            "defend": self.cfg.privacy.defend, "seed": self.cfg.train.seed, "test_examples": int(len(idx)),
            "vocab_size": len(d.vocab),
            "test": self.evaluate(3 if self.cfg.train.epochs_attack else 2, "test"),
            "majority_rate": {**{s.name: majority_rate(d.task[idx, i]) for i, s in enumerate(d.task_specs)},
                              **{s.name: majority_rate(d.private[idx, i]) for i, s in enumerate(d.private_specs)}},
            "bow_frequent_words_baseline": frequent_words_f1(d, "test"),
        }
        atomic_write_json(self.run.path / "train_summary.json", summary)
        return summary


def make_text_trainer(cfg: TextRunConfig, out: Path, resume: bool = False, progress: bool = True,
                      on_step: Callable[[TextTrainer, Position], None] | None = None) -> TextTrainer:
    """Create (or, with ``resume``, re-open) a text run directory and a trainer at its latest checkpoint."""
    run, cfg = begin_run(out, cfg, resume, lambda r: load_text_config(r.config))
    data, split = prepare_text(cfg, run if run.exists() else None)
    if not run.exists():
        run.path.mkdir(parents=True, exist_ok=True)
        cfg.data.root = str(data.corpus.root)
        cfg.meta.update({"version": __version__, "commit": git_commit(), "split_source": split["source"],
                         "vocab_size": len(data.vocab),
                         "task_specs": [spec_to_dict(s) for s in data.task_specs],
                         "private_specs": [spec_to_dict(s) for s in data.private_specs],
                         "split_sizes": {k: len(split[k]) for k in SPLITS}})
        atomic_write_json(run.split, split)
        data.vocab.save(run.path / "vocab.json")
        save_config(cfg, run.config)
    trainer = TextTrainer(cfg, run, data, progress, resolve_device(cfg.train.device), on_step)
    if resume:
        trainer.resume()
    return trainer


def train_text(cfg: TextRunConfig, out: Path, resume: bool = False, progress: bool = True,
               on_step: Callable[[TextTrainer, Position], None] | None = None) -> dict[str, Any]:
    """Train a text run end to end (or continue it) and return its test summary."""
    trainer = make_text_trainer(cfg, out, resume, progress, on_step)
    if not (resume and trainer.run.is_complete()):
        trainer.fit()
    return trainer.summarize()
