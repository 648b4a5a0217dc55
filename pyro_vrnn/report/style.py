"""A handwritten line's style, measured from its pen offsets: does priming (Graves 2013, section 5.3) carry the
style of the line it primes on?

A line is rows x_t = (pen_t, dx_t, dy_t) in data units (pyro_vrnn/data/iam.py: y up, pen_t = 1 where the pen
lifts after point t). Its points are P_t = sum_{s <= t} (dx_s, dy_s); the segment P_t -> P_{t+1} is drawn (pen
down) where pen_t = 0. Three numbers describe how it is written, whatever it says:

    slant    the angle from the vertical of its mostly-vertical pen-down strokes, in degrees, positive leaning
             right: the shear s of x -> x + s y is the |dy|-weighted mean of dx / dy over the segments within
             45 degrees of vertical once the line is unsheared by s (a fixed point, so that a round letter,
             symmetric about the vertical, adds nothing), and slant = atan(s);
    height   the median vertical extent of its up- and downstrokes: the pen-down path cut where it lifts and
             where it turns from going up to going down or back, the median of those pieces' heights. Letters'
             size, as their strokes show it: unlike the range of the points' heights it hardly depends on which
             letters (ascenders, descenders, capitals) the line happens to hold, nor on a tilted baseline;
    spacing  the x-range of the points divided by the number of characters the line writes: how far the pen
             advances a character (letter width and word gaps together).

A shear by angle a adds a to the slant and leaves the height; scaling a line by k multiplies height and spacing
by k and leaves the slant (tests/test_style.py). `standardized` puts the three on one scale (z-scores over a set
of real lines), in which `distance` compares two lines; `style_pairs` and `closer_to_first` are what
run/style.py asks with them: is a line written after priming on line N nearer N's style than line M's?
"""

import math
from typing import NamedTuple

import numpy as np

MAX_ANGLE = 45.0  # degrees from vertical: a segment steeper than this is part of a downstroke or upstroke


class Style(NamedTuple):
    slant: float  # degrees from vertical, positive leaning right
    height: float  # data units
    spacing: float  # data units a character


def points_and_strokes(line):
    """[T, 3] rows (pen, dx, dy) -> points [T, 2] (y up) and down [T - 1] bool: P_t -> P_{t+1} is drawn.

    The first row's offset leads from wherever the pen was before the line (for a written continuation, the
    end of its priming line), so P_0 is taken as the origin and that offset is not part of the line."""
    line = np.asarray(line, dtype=np.float64)
    if line.ndim != 2 or line.shape[1] != 3:
        raise ValueError(f"a handwriting line is [T, 3] rows (pen, dx, dy), got shape {line.shape}")
    points = np.cumsum(line[:, 1:3], axis=0) - line[0, 1:3]
    return points, line[:-1, 0] < 0.5


def shear_of(points, down, iterations=20):
    """The shear s (x -> x + s y) of the mostly-vertical pen-down segments: see the module's docstring."""
    d = np.diff(points, axis=0)[down]
    dx, dy = d[:, 0], d[:, 1]
    limit = math.tan(math.radians(MAX_ANGLE))
    s = 0.0
    for _ in range(iterations):
        near = np.abs(dx - s * dy) <= limit * np.abs(dy)
        near &= dy != 0
        if not near.any():
            return math.nan
        s_next = float(np.sum(np.sign(dy[near]) * dx[near]) / np.sum(np.abs(dy[near])))
        if abs(s_next - s) < 1e-9:
            break
        s = s_next
    return s


def height_of(points, down):
    """The median vertical extent of the pen-down strokes' monotone pieces (up- and downstrokes)."""
    dy = np.diff(points[:, 1])
    moving = np.flatnonzero(down & (dy != 0))
    if len(moving) == 0:
        return math.nan
    sign = np.sign(dy[moving])
    lifts = np.cumsum(~down)  # pen-ups up to each segment: a piece never spans one
    starts = np.ones(len(moving), dtype=bool)
    starts[1:] = (sign[1:] != sign[:-1]) | (lifts[moving[1:]] != lifts[moving[:-1]])
    extents = np.bincount(np.cumsum(starts) - 1, weights=np.abs(dy[moving]))
    return float(np.median(extents))


def measure(line, num_characters):
    """The Style of one line [T, 3] (pen, dx, dy) in data units that writes `num_characters` characters."""
    if num_characters < 1:
        raise ValueError("a line's spacing needs the number of characters it writes (at least 1)")
    points, down = points_and_strokes(line)
    if len(points) < 2:
        return Style(math.nan, math.nan, math.nan)
    return Style(
        slant=math.degrees(math.atan(shear_of(points, down))),
        height=height_of(points, down),
        spacing=float(np.ptp(points[:, 0])) / num_characters,
    )


def measure_all(lines, texts):
    """[N, 3] array: the Style of each line, with the text it writes (NaN for a line without text)."""
    styles = [
        measure(line, len(text)) if text else Style(math.nan, math.nan, math.nan) for line, text in zip(lines, texts)
    ]
    return np.array(styles, dtype=np.float64)


def standardized(styles, reference):
    """styles [..., 3] as z-scores against `reference` [N, 3] (e.g. the real lines of a split): each measure's
    mean and standard deviation over the reference lines, so that a degree of slant and a unit of height count
    as much as they vary between lines (reference lines that could not be measured, NaN, are left out)."""
    reference = np.asarray(reference, dtype=np.float64)
    return (np.asarray(styles, dtype=np.float64) - np.nanmean(reference, 0)) / np.nanstd(reference, 0)


def distance(a, b):
    """Euclidean distance between standardized styles [..., 3]."""
    return np.sqrt(np.sum((np.asarray(a) - np.asarray(b)) ** 2, axis=-1))


def writer_of(name):
    """The writer of a line named as IAM-OnDB names it, form-line (a01-000u-01, hershey's h00-015-03): one form
    is written by one writer (a hershey form is all of one synthetic writer's lines)."""
    return name.rsplit("-", 1)[0]


def style_pairs(writers, usable, num, rng):
    """`num` pairs (n, m) of the `usable` line indices: n any, m one of another writer than n's (`writers`: one
    per line). A line with no other writer's line is never n."""
    writers, usable = np.asarray(writers), np.asarray(usable, dtype=np.int64)
    eligible = [n for n in usable if np.any(writers[usable] != writers[n])]
    if not eligible:
        raise ValueError("the test lines with text are all of one writer: no pair of two styles")
    pairs = []
    for _ in range(num):
        n = int(rng.choice(eligible))
        m = int(rng.choice(usable[writers[usable] != writers[n]]))
        pairs.append((n, m))
    return pairs


def closer_to_first(styles, first, second, reference):
    """[N] bool: each of `styles` [N, 3] nearer (standardized against `reference`) to `first` [N, 3] than to
    `second` [N, 3]; and the two distances [N] each."""
    z, a, b = (standardized(s, reference) for s in (styles, first, second))
    to_first, to_second = distance(z, a), distance(z, b)
    return to_first < to_second, to_first, to_second
