"""Text modality (paper section 5.2, Table 7): TwitterAAE-style data, LSTM modules, the adversarial cycle."""
from .config import TextRunConfig, apply_text_overrides, text_preset
from .data import TextCorpus, Vocabulary, load_text, tokenize
from .models import BagOfWordsReconstructor, LSTMClassifier, TextObfuscator
from .train import TextTrainer, make_text_trainer, prepare_text, train_text

__all__ = [
    "BagOfWordsReconstructor", "LSTMClassifier", "TextCorpus", "TextObfuscator", "TextRunConfig", "TextTrainer",
    "Vocabulary", "apply_text_overrides", "load_text", "make_text_trainer", "prepare_text", "text_preset",
    "tokenize", "train_text",
]
