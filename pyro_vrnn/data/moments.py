"""The statistics that standardize a dataset, accumulated while it is written.

Chung et al. (2015) standardize each dataset with a mean and standard deviation taken from the
training set alone (docs/paper.md). The writer (schema.StreamWriter) keeps one RunningMoments per
split and feeds it every row as the row streams to disk, so a 300-hour speech corpus never sits in
memory for its statistics: speech takes ONE scalar mean and std over the 200 columns of its frames
(pooled_stats, audio.py); column_stats gives one per column.
"""

import numpy as np


class RunningMoments:
    """Count, mean and sum of squared deviations of each column, accumulated block by block.

    Blocks are merged with Chan et al.'s pairwise update in float64, which stays accurate over
    billions of values (a plain sum of squares would lose digits to cancellation).
    """

    def __init__(self, dim):
        self.count = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros(dim)

    def update(self, rows):
        rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        n = len(rows)
        if n == 0:
            return
        block_mean = rows.mean(axis=0)
        block_m2 = ((rows - block_mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = block_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + block_m2 + delta**2 * (self.count * n / total)
        self.count = total

    def column_stats(self):
        """(mean [D], std [D]) of each column (population std, as numpy's default)."""
        return self.mean.copy(), np.sqrt(self.m2 / max(self.count, 1))

    def pooled_stats(self, columns=None):
        """(mean, std) of the chosen columns taken together as one variable (all by default)."""
        columns = np.arange(len(self.mean)) if columns is None else np.asarray(columns)
        mean = self.mean[columns].mean()
        m2 = self.m2[columns].sum() + self.count * ((self.mean[columns] - mean) ** 2).sum()
        return float(mean), float(np.sqrt(m2 / max(self.count * len(columns), 1)))


# Data standardized with the train split's statistics has mean 0 and std 1 in every column of train: a column
# whose std or |mean| exceeds 10 is an order of magnitude away from that (byo.py warns of it).
STANDARDIZED_WITHIN = 10.0


def unstandardized(moments, within=STANDARDIZED_WITHIN):
    """How far the columns of `moments` are from standardized, in a few words, where any column's std or
    |mean| exceeds `within`: the worst column, and how many there are; None where none does."""
    mean, std = moments.column_stats()
    away = np.maximum(std, np.abs(mean))
    off = away > within
    if not off.any():
        return None
    i = int(np.argmax(away))
    worst = f"column {i} has mean {mean[i]:.3g} and std {std[i]:.3g}"
    return f"{worst}; {int(off.sum())} of {len(away)} columns have a std or |mean| above {within:g}"
