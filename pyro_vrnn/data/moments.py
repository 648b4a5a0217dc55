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
