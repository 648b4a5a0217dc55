"""Token data (kind "tokens", schema.py): sequences of symbols from a vocabulary, e.g. characters of text or chess
moves, for the categorical emission p(x_t = k | z_t, h_{t-1}) = softmax(theta_t)_k (distributions.TokenCategorical).

A file stores each step as one integer id, data [total_steps, 1], and the root attribute `vocabulary`: the V
tokens as strings, id k meaning vocabulary[k] (schema.py reads and writes it). Text whose tokens are all single
characters reads and prints as a string ("To be, or not"); other tokens (UCI chess moves) as words separated by
spaces ("e2e4 e7e5 g1f3").
"""

import numpy as np

from pyro_vrnn.data.schema import DataError


def characters(vocabulary):
    """Whether every token is one character: then a sequence is a string, else words separated by spaces."""
    return all(len(token) == 1 for token in vocabulary)


def decode(ids, vocabulary):
    """Token ids (any shape that flattens to the steps) -> text: characters joined, other tokens with spaces."""
    tokens = [vocabulary[int(k)] for k in np.asarray(ids).reshape(-1)]
    return "".join(tokens) if characters(vocabulary) else " ".join(tokens)


def encode(text, vocabulary):
    """Text -> ids [T, 1] float32 (the data's rows): its characters, or its space-separated tokens; one line
    naming the first token outside the vocabulary."""
    index = {token: k for k, token in enumerate(vocabulary)}
    tokens = list(text) if characters(vocabulary) else text.split()
    for position, token in enumerate(tokens):
        if token not in index:
            shown = ", ".join(map(repr, vocabulary[:12])) + (", ..." if len(vocabulary) > 12 else "")
            raise DataError(
                f"token {token!r} (at position {position}) is not in the model's vocabulary of {len(vocabulary)} "
                f"({shown}); use only tokens the training data has"
            )
    return np.asarray([index[token] for token in tokens], dtype=np.float32).reshape(-1, 1)


def first_bad_id(block, vocabulary_size):
    """(row, value, reason) of the first value of `block` [n, 1] that is no token id of a vocabulary of
    `vocabulary_size`, or None. reason: "outside" (not a whole number from 0) or "missing" (an id >= V)."""
    values = np.asarray(block, dtype=np.float64).reshape(-1)
    outside = (values != np.round(values)) | (values < 0)
    missing = ~outside & (values >= vocabulary_size)
    bad = outside | missing
    if not bad.any():
        return None
    row = int(np.flatnonzero(bad)[0])
    return row, float(values[row]), "outside" if outside[row] else "missing"
