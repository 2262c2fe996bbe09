"""Text modules of paper Table 7: LSTM obfuscator, LSTM classifier/adversary, bag-of-words attacker."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def _mask(lengths: torch.Tensor, steps: int, device: torch.device) -> torch.Tensor:
    return (torch.arange(steps, device=device)[None, :] < lengths.to(device)[:, None]).float()


class TextObfuscator(nn.Module):
    """O: Embedding (300) then LSTM (300); outputs the hidden state of every token ``[B, T, H]``."""

    def __init__(self, vocab_size: int, embedding_dim: int = 300, hidden: int = 300) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(embedding_dim, hidden, batch_first=True)
        self.out_dim = hidden

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Ids ``[B, T]`` and lengths ``[B]`` (CPU) -> features ``[B, T, H]``, zero past each length."""
        packed = pack_padded_sequence(self.embedding(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=tokens.shape[1])[0]


class LSTMClassifier(nn.Module):
    """C and AC: LSTM layers (2 x 300) over the features, FC-150 + ReLU, FC to the logits."""

    def __init__(self, in_dim: int, num_outputs: int, hidden: int = 300, layers: int = 2, fc: int = 150,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, fc), nn.ReLU(inplace=True),
                                  nn.Linear(fc, num_outputs))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Features ``[B, T, D]`` -> logits ``[B, num_outputs]`` from the last layer's final state."""
        packed = pack_padded_sequence(features, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        return self.head(h_n[-1])


class BagOfWordsReconstructor(nn.Module):
    """Text reconstruction attacker: masked mean- and max-pooled features -> MLP -> one logit per vocabulary word."""

    def __init__(self, in_dim: int, vocab_size: int, hidden: int = 300) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, vocab_size))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Features ``[B, T, D]`` -> word logits ``[B, V]`` (sigmoid > 0.5: the word is predicted present)."""
        mask = _mask(lengths, features.shape[1], features.device).unsqueeze(-1)
        mean = (features * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        peak = features.masked_fill(mask == 0, float("-inf")).amax(1)
        return self.net(torch.cat([mean, peak], dim=1))
