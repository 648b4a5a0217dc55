"""Token data (kind "tokens", schema.py): sequences of symbols from a vocabulary, e.g. characters of text or chess
moves, for the categorical emission p(x_t = k | z_t, h_{t-1}) = softmax(theta_t)_k (distributions.TokenCategorical).

A file stores each step as one integer id, data [total_steps, 1], and the root attribute `vocabulary`: the V
tokens as strings, id k meaning vocabulary[k] (schema.py reads and writes it). Text whose tokens are all single
characters reads and prints as a string ("To be, or not"); other tokens (UCI chess moves) as words separated by
spaces ("e2e4 e7e5 g1f3").
"""

import numpy as np

from pyro_vrnn.data.schema import DataError, check_vocabulary, read_vocabulary


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


def _fail(path, what, fix):
    raise DataError(f"{path}: {what}; {fix}")


def check_token_ids(path, split, block, start, offsets, vocabulary_size):
    """Kind "tokens" in a user's file (byo.py): every value of `block`, rows start.. of `split`, a whole number
    0 <= id < V, where V is the vocabulary's size; one line naming the first that is not."""
    bad = first_bad_id(block, vocabulary_size)
    if bad is None:
        return
    row, value, reason = bad
    sequence = int(np.searchsorted(offsets, start + row, side="right") - 1)
    where = f"{split} sequence {sequence} (row {start + row})"
    if reason == "outside":
        _fail(path, f"{where} holds {value:g}, a token outside the vocabulary", "token ids are whole numbers from 0")
    _fail(
        path,
        f"{where} uses token id {value:g}, but the vocabulary has only {vocabulary_size} tokens (ids 0-"
        f"{vocabulary_size - 1})",
        "add every token the data uses to the attribute vocabulary",
    )


def check_file_vocabulary(path, attrs, kind, dim):
    """A user's file (byo.py) of kind "tokens": D = 1 and a vocabulary (schema.check_vocabulary) in its root
    attributes `attrs`; returns it, or None for other kinds (which must have none)."""
    vocabulary = read_vocabulary(attrs)
    if kind != "tokens":
        if vocabulary is not None:
            _fail(path, f"attribute vocabulary is set on kind '{kind}' data", "set kind to 'tokens', or drop it")
        return None
    if vocabulary is None:
        _fail(path, "kind 'tokens' has no attribute vocabulary", "set f.attrs['vocabulary'] = [token of id 0, ...]")
    if dim != 1:
        _fail(path, f"kind 'tokens' needs D = 1 (one token id a step), the data has D = {dim}", "store one id a row")
    return check_vocabulary(vocabulary, f"{path}: attribute vocabulary")
