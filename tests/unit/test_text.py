"""Text modality: TwitterAAE-style format, tokeniser, vocabulary, LSTM modules and the adversarial cycle."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from deepobfuscator.data import DataError
from deepobfuscator.text.config import TextRunConfig, apply_text_overrides, text_preset
from deepobfuscator.text.data import Vocabulary, bag_of_words, encode, load_text, tokenize
from deepobfuscator.text.models import BagOfWordsReconstructor, LSTMClassifier, TextObfuscator

COMMON = "i you we the a to go got so lol just day night love want need know see this that".split()
AAE = "finna tryna ion bruh lowkey deadass".split()
SAE = "going trying dont dude honestly seriously".split()


def tweet_lines(n: int, seed: int = 0) -> list[str]:
    """``mention<TAB>dialect<TAB>text`` rows whose labels are predictable from the words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        mention, dialect = rng.random() < 0.5, rng.random() < 0.5
        words = rng.sample(COMMON, 5) + rng.sample(AAE if dialect else SAE, 2)
        if mention:
            words.insert(0, f"@user{rng.randint(1, 99)}")
        if rng.random() < 0.2:
            words.append("http://t.co/x")
        rng.shuffle(words)
        rows.append(f"{int(mention)}\t{'aae' if dialect else 'sae'}\t{' '.join(words)}")
    return rows


def write_tsv(path: Path, rows: list[str], header: str = "mention\tdialect\ttext") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tweets(tmp_path: Path) -> Path:
    return write_tsv(tmp_path / "data.tsv", tweet_lines(192))


def tiny(root: Path, **train) -> TextRunConfig:
    cfg = text_preset("text-tiny")
    cfg.data.root = str(root)
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


# ----------------------------------------------------------------- format and vocabulary
def test_tokenize_handles_tweet_tokens() -> None:
    assert tokenize("@Bob I'm GOING 2 http://x.co/a #TBT!!") == ["<user>", "i'm", "going", "2", "<url>", "#tbt", "!", "!"]
    assert tokenize("Hi", lowercase=False) == ["Hi"]


def test_vocabulary_frequency_unknown_and_roundtrip(tmp_path: Path) -> None:
    vocab = Vocabulary.build([["a", "b", "a"], ["a", "c", "b"]], min_freq=2, max_size=10)
    assert vocab.tokens == ["<pad>", "<unk>", "a", "b"]
    assert vocab.encode(["a", "zzz", "b"]) == [2, 1, 3]
    assert len(Vocabulary.build([["a", "b", "c"]], max_size=3)) == 3
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json").tokens == vocab.tokens
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="bad.json"):
        Vocabulary.load(tmp_path / "bad.json")


def test_load_text_single_file_classes_and_tabs(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "t.tsv", ["1\tsae\thello\tworld", "0\taae\tyo", "1\taae\tsup"])
    corpus = load_text(path)
    assert corpus.texts[0] == "hello\tworld" and corpus.partition is None
    assert corpus.specs["dialect"].classes == ("aae", "sae") and corpus.specs["dialect"].binary
    assert corpus.labels["mention"].tolist() == [1, 0, 1]
    assert load_text(tmp_path / "t.tsv", max_examples=2).texts == ["hello\tworld", "yo"]


def test_load_text_official_split_folder(tmp_path: Path) -> None:
    rows = tweet_lines(30)
    for name, part in (("train.tsv", rows[:20]), ("dev.tsv", rows[20:25]), ("test.tsv", rows[25:])):
        write_tsv(tmp_path / "d" / name, part)
    corpus = load_text(tmp_path / "d")
    assert np.bincount(corpus.partition).tolist() == [20, 5, 5]


@pytest.mark.parametrize("content, match", [
    ("", "empty file"),
    ("mention\tdialect\n1\ta\n", "header must name"),
    ("mention\tdialect\ttext\n1\taae\thi\n1\thi\n", r"t\.tsv:3: expected 2 label value"),
    ("mention\tdialect\ttext\n1\t \thi\n", r"t\.tsv:2: empty label"),
    ("mention\tdialect\ttext\n1\taae\t  \n", r"t\.tsv:2: empty text"),
    ("mention\tdialect\ttext\n\n", "no examples"),
    ("a\ta\ttext\n1\t2\thi\n", "repeated column"),
])
def test_load_text_bad_input_names_file_and_line(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / "t.tsv").write_text(content)
    with pytest.raises(DataError, match=match):
        load_text(tmp_path / "t.tsv")


def test_load_text_bad_roots_and_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_text(tmp_path / "missing.tsv")
    with pytest.raises(DataError, match="no text data"):
        load_text(tmp_path)
    write_tsv(tmp_path / "s" / "train.tsv", tweet_lines(4))
    with pytest.raises(DataError, match="missing dev.tsv, test.tsv"):
        load_text(tmp_path / "s")
    write_tsv(tmp_path / "s" / "dev.tsv", tweet_lines(4))
    write_tsv(tmp_path / "s" / "test.tsv", ["1\thi"], header="mention\ttext")
    with pytest.raises(DataError, match="test.tsv:1: columns"):
        load_text(tmp_path / "s")
    corpus = load_text(write_tsv(tmp_path / "one.tsv", ["1\taae\thi", "0\taae\tyo"]))
    with pytest.raises(DataError, match="did you mean 'dialect'"):
        corpus.select(["dialct"], "private")
    with pytest.raises(DataError, match="single value"):
        corpus.select(["dialect"], "private")


def test_encode_and_bag_of_words() -> None:
    vocab = Vocabulary.build([["a", "b"]])
    ids, lengths = encode([["a", "b", "a", "x"], []], vocab, max_len=3)
    assert ids.tolist() == [[2, 3, 2], [1, 0, 0]] and lengths.tolist() == [3, 1]
    bow = bag_of_words(torch.from_numpy(ids), len(vocab))
    assert bow.tolist() == [[0, 0, 1, 1], [0, 0, 0, 0]]


# ----------------------------------------------------------------- models
def test_modules_shapes_and_padding_invariance() -> None:
    torch.manual_seed(0)
    obf = TextObfuscator(20, 8, 6).eval()
    clf = LSTMClassifier(6, 3, hidden=5, layers=2, fc=4).eval()
    bow = BagOfWordsReconstructor(6, 20, 7).eval()
    tokens = torch.tensor([[2, 3, 4, 0, 0], [5, 6, 0, 0, 0]])
    lengths = torch.tensor([3, 2])
    feats = obf(tokens, lengths)
    assert feats.shape == (2, 5, 6) and feats[1, 2:].abs().sum() == 0
    wider = torch.cat([tokens, torch.zeros(2, 3, dtype=torch.long)], 1)
    assert torch.allclose(clf(feats, lengths), clf(obf(wider, lengths), lengths), atol=1e-6)
    assert bow(feats, lengths).shape == (2, 20)
    assert torch.allclose(bow(feats, lengths), bow(obf(wider, lengths), lengths), atol=1e-6)


def test_paper_sizes_are_the_default() -> None:
    m = TextRunConfig().model
    assert (m.embedding_dim, m.hidden, m.classifier_hidden, m.classifier_layers, m.fc) == (300, 300, 300, 2, 150)
    cfg = apply_text_overrides(TextRunConfig(), ["model.hidden=32", "privacy.lambda1=2"])
    assert cfg.model.hidden == 32 and cfg.privacy.lambda1 == 2
    from deepobfuscator.config import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'model.hidden'"):
        apply_text_overrides(TextRunConfig(), ["model.hiden=3"])


# ----------------------------------------------------------------- training
def test_train_text_writes_run_and_reports(tweets: Path, tmp_path: Path) -> None:
    from deepobfuscator.text.train import train_text

    summary = train_text(tiny(tweets), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "split.json", "vocab.json", "metrics.jsonl", "train_summary.json",
                 "checkpoints/final.safetensors"):
        assert (run / name).is_file(), name
    stages = [json.loads(line)["stage"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert stages == ["pretrain", "attacker", "adversarial", "attack"]
    test = summary["test"]
    assert set(test) == {"C_acc", "AC_acc", "fresh_AC_acc", "bow"}
    assert 0.0 <= test["bow"]["f1"] <= 1.0 and 0.0 < summary["bow_frequent_words_baseline"]["f1"] <= 1.0
    assert summary["majority_rate"]["dialect"] >= 0.5 and summary["test_examples"] > 0
    split = json.loads((run / "split.json").read_text())
    assert split["source"] == "seeded" and sum(len(split[k]) for k in ("train", "val", "test")) == 192


def test_train_text_resume_matches_uninterrupted(tweets: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from deepobfuscator.text.train import TextTrainer, train_text
    from deepobfuscator.training import Position

    def cfg() -> TextRunConfig:
        out = tiny(tweets, epochs_adversarial=2)
        out.privacy.defend = "none"
        return out

    class Stop(Exception):
        pass

    def stop(trainer: TextTrainer, pos: Position) -> None:
        if pos.stage == 2 and pos.epoch == 1:
            raise Stop

    train_text(cfg(), tmp_path / "full", progress=False)
    with pytest.raises(Stop):
        train_text(cfg(), tmp_path / "cut", progress=False, on_step=stop)
    train_text(cfg(), tmp_path / "cut", resume=True, progress=False)
    a = load_file(str(tmp_path / "full" / "checkpoints" / "final.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoints" / "final.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 5


def test_text_cli_train_and_check(tweets: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from deepobfuscator.cli import main

    assert main(["text-check", str(tweets)]) == 0
    assert "dialect" in capsys.readouterr().out
    out = tmp_path / "cli-run"
    assert main(["text-train", "--preset", "text-tiny", "--data", str(tweets), "--out", str(out), "--no-progress",
                 "--set", "train.epochs_attack=0"]) == 0
    assert "fresh_AC_acc" not in json.loads((out / "train_summary.json").read_text())["test"]
    assert main(["text-train", "--preset", "text-tiny", "--data", str(tweets), "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["text-train", "--out", str(out), "--resume", "--set", "train.epochs_attack=2"]) == 2  # not dropped
    assert "train.epochs_attack (recorded 0, given 2)" in capsys.readouterr().err
    assert main(["text-train", "--preset", "text-tiny", "--data", str(tweets), "--out", str(tmp_path / "x"),
                 "--private", "nope"]) == 2
    assert "no private label column 'nope'" in capsys.readouterr().err
