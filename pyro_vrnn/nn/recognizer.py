"""An online handwriting recognizer: a bidirectional LSTM over the pen offsets, trained with CTC (Graves et al.
2006; online handwriting as in Graves et al. 2009), to read back what the models conditioned on text write.

    y_t = log_softmax(W [h->_t, h<-_t] + b)   over the alphabet and CTC's blank, for every step x_t = (pen, dx, dy)
    loss = -log sum_{paths pi -> text} prod_t y_t(pi_t)       (torch.nn.CTCLoss)

Reading is greedy: the most probable symbol at each step, repeats merged, blanks dropped. The character error
rate (CER) is the edit distance between what it reads and the true text, summed over lines, divided by the
number of true characters.

Inputs are the lines as the data set stores them (dx, dy standardized with the training split's statistics),
so that a line written by a model (in data units: `synthesis.write_lines`) is standardized with the same
numbers before it is read (`Recognizer.normalize`).
"""

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from pyro_vrnn.data.dataset import pad_batch
from pyro_vrnn.nn.text_window import encode_texts


class Recognizer(nn.Module):
    """BiLSTM + linear output over len(alphabet) + 1 symbols, 0 being CTC's blank."""

    def __init__(self, alphabet, mean, std, hidden=128, layers=2, x_dim=3):
        super().__init__()
        self.alphabet, self.hidden, self.layers = alphabet, hidden, layers
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.asarray(std), dtype=torch.float32))
        self.lstm = nn.LSTM(x_dim, hidden, layers, bidirectional=True, batch_first=True)
        self.out = nn.Linear(2 * hidden, len(alphabet) + 1)

    def normalize(self, x):
        """A line in data units -> as the data set stores it."""
        return (torch.as_tensor(x, dtype=torch.float32) - self.mean) / self.std

    def forward(self, x, lengths):
        """log y [T, B, C] (CTCLoss's layout) from x [B, T, D] padded, lengths [B]."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return torch.log_softmax(self.out(out), -1).transpose(0, 1)

    def targets(self, texts):
        """(concatenated indices 1..A, lengths) of the texts, for CTCLoss (0 is its blank)."""
        encoded = encode_texts(texts, self.alphabet)  # raises for a character outside the alphabet
        return (encoded.chars + 1)[encoded.mask], encoded.mask.sum(1)

    @torch.no_grad()
    def read(self, x, lengths):
        """Greedy CTC decoding: the texts of a padded batch."""
        best = self(x, lengths).argmax(-1).transpose(0, 1).cpu()  # [B, T]
        texts = []
        for row, length in zip(best, lengths.tolist()):
            symbols = row[:length].tolist()
            kept = [s for i, s in enumerate(symbols) if s != 0 and (i == 0 or s != symbols[i - 1])]
            texts.append("".join(self.alphabet[s - 1] for s in kept))
        return texts


def edit_distance(a, b):
    """Levenshtein distance between two strings (insertions, deletions, substitutions cost 1)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def character_error_rate(read, truth):
    """sum of edit distances / sum of true lengths, over lines."""
    return sum(edit_distance(r, t) for r, t in zip(read, truth)) / max(1, sum(len(t) for t in truth))


def pad(lines):
    """[T_i, D] tensors -> (x [B, T, D], lengths [B]): the data's padded batch (data.pad_batch) and its lengths."""
    x, mask = pad_batch(lines)
    return x, mask.sum(1)


def read_dataset(recognizer, dataset, batch_size=64):
    """(what it reads, the truth) for every line of a split that has a text."""
    order = [i for i in np.argsort(dataset.lengths, kind="stable") if dataset.texts[i]]
    read, truth = [], []
    recognizer.eval()
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        x, lengths = pad([dataset[int(i)] for i in indices])
        read += recognizer.read(x, lengths)
        truth += [dataset.texts[int(i)] for i in indices]
    recognizer.train()
    return read, truth
