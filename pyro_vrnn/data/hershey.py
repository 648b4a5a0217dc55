"""The embedded dataset: synthetic handwriting rendered from the Hershey script fonts.

IAM-OnDB, the paper's handwriting set, needs registration, so the project ships a stand-in that
is generated on the spot: short lines of English words, written by a few hundred synthetic
"writers" with the script fonts of the `hershey-fonts` package (cursive, scripts, scriptc). A
font always draws the same text the same way, so each writer brings its own style, kept for all
of its lines (Fig. 3 of the paper asks whether a model keeps one style across a line):

  * slant, letter width (spacing), word spacing, size and a slightly tilted baseline;
  * pen-connected words: a stroke that starts where the previous one ends (or within a small
    gap, where the font lifts the pen to retrace, as in the humps of an "m") continues it;
  * a smooth pen: corners are rounded, and a slow smooth tremor is added along the path;
  * a pen tablet sampling at a fixed rate a pen that moves at a writer-specific speed, slower
    in tight curves (the two-thirds power law) and varying smoothly, so the points are unevenly
    spaced as in real data.

The lines are written as lineStrokes XML files, in IAM-OnDB's layout and format (integer
whiteboard coordinates with y pointing down, time stamps, split lists), and then prepared by
exactly the same code as IAM-OnDB (iam.py), so the two datasets share every step after
rendering. What each line writes goes beside it as IAM-OnDB's ascii transcription of its form
(ascii/h00/h00-057/h00-057.txt), so the prepared lines keep their text. Everything is deterministic
given (num_lines, seed).
"""

import os
import shutil
import time

import numpy as np

from pyro_vrnn.data.iam import prepare_iam, random_split
from pyro_vrnn.data.schema import DataError
from pyro_vrnn.data.tempfiles import remove_orphaned_temps, temp_path
from pyro_vrnn.data.text import CHARACTERS, random_text

# The embedded set keeps a test split of its own (IAM-OnDB's authors trained on testset_f).
SPLIT_LISTS = {"trainset.txt": "train", "testset_v.txt": "valid", "testset_f.txt": "test"}

GENERATOR_VERSION = 2  # bump when the rendering below changes: the XML files are regenerated (2: transcriptions)

FONTS = {"cursive": 0.45, "scripts": 0.45, "scriptc": 0.1}  # name -> probability per writer
FONT_SPEED = {"cursive": 1.0, "scripts": 1.0, "scriptc": 1.1}  # scriptc draws double lines
JOIN_GAP = 0.12  # continue a stroke across a pen lift shorter than this (in font heights)
DENSE_STEP = 0.02  # resolution of the pen path before sampling (font heights)
MEAN_STEP = 0.21  # mean pen travel between two samples (font heights); sets the line lengths

# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def random_writer(rng):
    """The style of one synthetic writer (lengths in font heights, the font's cap-to-descender size)."""
    names = list(FONTS)
    font = names[rng.choice(len(names), p=list(FONTS.values()))]
    return dict(
        font=font,
        slant=rng.uniform(-0.05, 0.4),  # x += slant * y
        width=rng.uniform(0.85, 1.2),  # horizontal stretch: letter spacing that keeps joins
        word_gap=rng.uniform(0.5, 1.3),  # times the font's space
        height=rng.uniform(70.0, 110.0),  # whiteboard units per font height
        tilt=rng.normal(0.0, 0.02),  # baseline slope
        step=MEAN_STEP * FONT_SPEED[font] * rng.uniform(0.8, 1.25),  # pen speed, in font heights per sample
        wobble=rng.uniform(0.05, 0.25),  # relative speed variation along the path
        bend=rng.uniform(1.0, 4.0),  # curvature (1 / font height) at which the pen slows down
        smooth=rng.uniform(0.015, 0.035),  # corner rounding (std of a Gaussian, font heights)
        jitter=rng.uniform(0.004, 0.012),  # amplitude of the slow tremor (font heights)
        rate=rng.uniform(80.0, 120.0),  # tablet samples per second (time stamps only)
    )


class ScriptFont:
    """The glyphs of one Hershey script font, and its words as pen strokes (cached).

    The glyphs are taken once from `hershey-fonts` (normalize_rendering(1.0): y up, the height
    from the descender line to the cap line is 1) and placed by us, which is much faster than
    asking the font for every line.
    """

    def __init__(self, name):
        try:
            from HersheyFonts import HersheyFonts
        except ImportError:
            raise DataError("the hershey dataset needs the hershey-fonts package: pip install hershey-fonts") from None

        font = HersheyFonts()
        font.load_default_font(name)
        font.normalize_rendering(1.0)
        scale = font.render_options.scalex
        self.glyphs = {}  # character -> (strokes as [n, 2] arrays from x = 0, advance)
        for glyph, c in zip(font.glyphs_for_text(CHARACTERS), CHARACTERS):
            self.glyphs[c] = (
                [np.array(s, dtype=np.float64) for s in font.strokes_for_text(c)],
                scale * glyph.char_width,
            )
        self.space = self.glyphs[" "][1]
        self.words = {}

    def word(self, word):
        """(strokes, advance) of a word; a stroke that starts where the previous one ends, or
        within JOIN_GAP of it, continues it: the pen goes on, where the font lifts it to start
        the next letter or to retrace (as in the humps of an "m")."""
        if word not in self.words:
            strokes, x0 = [], 0.0
            for c in word:
                char_strokes, advance = self.glyphs[c]
                for stroke in char_strokes:
                    xy = stroke + (x0, 0.0)
                    gap = np.hypot(*(xy[0] - strokes[-1][-1])) if strokes else np.inf
                    if gap < JOIN_GAP:
                        strokes[-1] = np.vstack([strokes[-1], xy[1:] if gap < 1e-9 else xy])
                    else:
                        strokes.append(xy)
                x0 += advance
            self.words[word] = (strokes, x0)
        return self.words[word]


def load_fonts():
    return {name: ScriptFont(name) for name in FONTS}


# ---------------------------------------------------------------------------------------------
# Rendering one line
# ---------------------------------------------------------------------------------------------


def layout_strokes(words, font, writer, rng):
    """The strokes of a line of words: placed, stretched, slanted, on a tilted baseline; y up."""
    slant = writer["slant"] + rng.normal(0.0, 0.03)  # the lines of one writer differ a little
    tilt = writer["tilt"] + rng.normal(0.0, 0.01)
    # (x, y) -> (width x + slant y, then y + tilt x): stretch, shear, baseline
    transform = np.array([[writer["width"], writer["width"] * tilt], [slant, 1.0 + slant * tilt]])
    strokes, x0 = [], 0.0
    for word in words:
        word_strokes, advance = font.word(word)
        strokes += [(xy + (x0, 0.0)) @ transform for xy in word_strokes]
        x0 += advance + writer["word_gap"] * font.space * rng.uniform(0.8, 1.2) / writer["width"]
    return strokes


def tremor(rng, jitter):
    """A slow, smooth random displacement as a function of the distance the pen has travelled."""
    amplitude = jitter * rng.uniform(0.5, 1.0, size=(3, 2))
    wavelength = rng.uniform(0.3, 1.5, size=(3, 2))
    phase = rng.uniform(0.0, 2 * np.pi, size=(3, 2))

    def displacement(s):
        return np.sum(amplitude * np.sin(2 * np.pi * s[:, None, None] / wavelength + phase), axis=1)

    return displacement


def ragged_arange(counts):
    """For counts (2, 3): (0, 1, 0, 1, 2): the position of each element within its group."""
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


def render_line(words, fonts, writer, rng):
    """One handwritten line: a list of [n, 2] arrays of tablet samples, in font heights, y up.

    The strokes of a line are processed together, end to end in one array (`stroke_of` says
    which stroke a point belongs to), so that a few thousand lines take a few seconds.
    """
    strokes = layout_strokes(words, fonts[writer["font"]], writer, rng)
    points = np.concatenate(strokes)
    sizes = np.array([len(s) for s in strokes])
    stroke_of = np.repeat(np.arange(len(strokes)), sizes)
    first = np.cumsum(sizes) - sizes
    last = first + sizes - 1

    # 1. The pen's path, densely (every ~DENSE_STEP), the strokes one after the other along a
    #    parameter u that jumps by 1000 between strokes; each stroke is padded with copies of its
    #    end points, so that one convolution rounds the corners of all strokes without mixing them.
    segment = np.hypot(*np.diff(points, axis=0).T) * (stroke_of[1:] == stroke_of[:-1])
    s = np.concatenate([[0.0], np.cumsum(segment)])  # distance travelled with the pen down
    u = s + 1000.0 * stroke_of
    length = s[last] - s[first]
    n = np.ceil(length / DENSE_STEP).astype(int) + 1
    ds = length / np.maximum(n - 1, 1)
    sigma = writer["smooth"] / DENSE_STEP
    pad = int(3 * sigma) + 1
    j = ragged_arange(n + 2 * pad) - pad
    n_of, ds_of = np.repeat(n, n + 2 * pad), np.repeat(ds, n + 2 * pad)
    along = np.clip(j, 0, n_of - 1) * ds_of
    dense = np.repeat(u[first], n + 2 * pad) + along
    padded = np.column_stack([np.interp(dense, u, points[:, 0]), np.interp(dense, u, points[:, 1])])
    kernel = np.exp(-0.5 * (np.arange(-pad, pad + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    real = (j >= 0) & (j < n_of)
    path = np.column_stack([np.convolve(padded[:, c], kernel, mode="same")[real] for c in range(2)])
    travelled = (np.repeat(s[first], n + 2 * pad) + along)[real]
    path += tremor(rng, writer["jitter"])(travelled)
    stroke_of = np.repeat(np.arange(len(strokes)), n)

    # 2. The pen's speed along the path: slower where it bends, roughly as the two-thirds power
    #    law of handwriting (speed ~ curvature^(-1/3), Lacquaniti et al. 1983), with a wobble.
    d = np.diff(path, axis=0)
    inside = stroke_of[1:] == stroke_of[:-1]  # segments within a stroke (not the jumps between strokes)
    turn = np.zeros(len(path))
    angle = np.arctan2(d[:-1, 0] * d[1:, 1] - d[:-1, 1] * d[1:, 0], np.sum(d[:-1] * d[1:], axis=1))
    turn[1:-1] = np.where(inside[:-1] & inside[1:], np.abs(angle), 0.0) / DENSE_STEP
    turn = np.convolve(turn, np.ones(5) / 5, mode="same")
    wobble = 1 + writer["wobble"] * np.sin(2 * np.pi * travelled / rng.uniform(0.8, 2.0) + rng.uniform(0, 2 * np.pi))
    speed = writer["step"] * wobble * (1 + turn / writer["bend"]) ** (-1 / 3)
    # Time in tablet samples; strokes are put 10 units apart (the pen-up time is decided later)
    # so that one interpolation samples them all.
    duration = np.where(inside, np.hypot(d[:, 0], d[:, 1]) / (0.5 * (speed[1:] + speed[:-1])), 10.0)
    t = np.concatenate([[0.0], np.cumsum(duration)])

    # 3. A sample every time unit from each stroke's start; the last sample of a stroke is its
    #    end, where the pen lifts (appended, or moved there if the last tick is close to it).
    end = np.cumsum(n) - 1
    t0, t1 = t[end - n + 1], t[end]
    span = t1 - t0
    ticks = np.ceil(span).astype(int)  # samples at t0, t0 + 1, ... before t1
    append = (span > 0) & ((span - (ticks - 1) > 0.35) | (ticks == 1))
    count = np.where(span > 0, ticks + append, 1)
    when = np.repeat(t0, count) + ragged_arange(count)
    when[np.cumsum(count) - 1] = t1
    samples = np.column_stack([np.interp(when, t, path[:, 0]), np.interp(when, t, path[:, 1])])
    return np.split(samples, np.cumsum(count)[:-1])


# ---------------------------------------------------------------------------------------------
# lineStrokes XML, as IAM-OnDB writes it
# ---------------------------------------------------------------------------------------------


def to_whiteboard(strokes, writer, rng, start_time):
    """Font heights, y up -> integer whiteboard units, y down, with a time stamp per point."""
    origin = np.array([rng.uniform(300, 700), rng.uniform(800, 1600)])
    scale = writer["height"] * np.exp(rng.normal(0.0, 0.03))
    counts = np.array([len(xy) for xy in strokes])
    points = np.concatenate(strokes)
    board = np.rint(origin + scale * points * (1.0, -1.0)).astype(np.int64)
    # One tick per sample; between strokes the pen travels (at its speed) plus a short pause.
    first = np.cumsum(counts) - counts
    pen_up = np.zeros(len(points))
    gaps = np.hypot(*(points[first[1:]] - points[first[1:] - 1]).T)
    pen_up[first[1:]] = gaps / writer["step"] + rng.uniform(3, 15, size=len(gaps)) - 1
    ticks = np.cumsum(1.0 + pen_up) - 1.0
    times = start_time + ticks / writer["rate"]
    return board, times, counts


def line_strokes_xml(board, times, counts):
    """The text of a lineStrokes file (IAM-OnDB's WhiteboardCaptureSession format)."""
    (x0, y0), (x1, y1) = board.min(axis=0), board.max(axis=0)
    out = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>',
        "<WhiteboardCaptureSession>",
        "  <WhiteboardDescription>",
        '    <SensorLocation corner="top_left"/>',
        f'    <DiagonallyOppositeCoords x="{x1}" y="{y1}"/>',
        f'    <VerticallyOppositeCoords x="{x0}" y="{y1}"/>',
        f'    <HorizontallyOppositeCoords x="{x1}" y="{y0}"/>',
        "  </WhiteboardDescription>",
        "  <StrokeSet>",
    ]
    xs, ys, ts = board[:, 0].tolist(), board[:, 1].tolist(), times.tolist()
    start = 0
    for count in counts.tolist():
        stop = start + count
        out.append(f'    <Stroke colour="black" start_time="{ts[start]:.3f}" end_time="{ts[stop - 1]:.3f}">')
        out += [f'      <Point x="{xs[i]}" y="{ys[i]}" time="{ts[i]:.3f}"/>' for i in range(start, stop)]
        out.append("    </Stroke>")
        start = stop
    out += ["  </StrokeSet>", "</WhiteboardCaptureSession>", ""]
    return "\n".join(out)


def write_transcription(path, lines):
    """A form's text as IAM-OnDB's ascii files hold it: the lines after "CSR:" (iam.read_transcription)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("OCR:\n\n" + "\n".join(lines) + "\n\nCSR:\n\n" + "\n".join(lines) + "\n")


def generate(out_dir, num_lines, seed):
    """Write `num_lines` lines by synthetic writers (one form of 4-8 lines each) and split lists.

    Layout as IAM-OnDB: lineStrokes/h01/h01-057/h01-057-03.xml is line 3 of writer 57's form.
    The split is by writer (90/5/5), so valid and test hold unseen writers, as in IAM-OnDB.
    """
    fonts = load_fonts()
    forms, written, writer_id = [], 0, 0
    while written < num_lines:
        rng = np.random.default_rng([seed, writer_id])  # each writer is reproducible on its own
        writer = random_writer(rng)
        count = min(int(rng.integers(4, 9)), max(1, num_lines // 3), num_lines - written)
        form = f"h{writer_id // 50:02d}-{writer_id:03d}"
        folder = os.path.join(out_dir, "lineStrokes", form.split("-")[0], form)
        os.makedirs(folder, exist_ok=True)
        t = rng.uniform(100.0, 2000.0)
        texts = []
        for line in range(1, count + 1):
            words = random_text(rng)
            texts.append(" ".join(words))
            strokes = render_line(words, fonts, writer, rng)
            board, times, counts = to_whiteboard(strokes, writer, rng, t)
            with open(os.path.join(folder, f"{form}-{line:02d}.xml"), "w", encoding="ISO-8859-1") as f:
                f.write(line_strokes_xml(board, times, counts))
            t = times[-1] + rng.uniform(1.0, 4.0)
        write_transcription(os.path.join(out_dir, "ascii", form.split("-")[0], form, f"{form}.txt"), texts)
        forms.append(form)
        written += count
        writer_id += 1
    split_of = random_split(forms, seed)
    for file, split in SPLIT_LISTS.items():
        with open(os.path.join(out_dir, file), "w") as f:
            f.writelines(f"{form}\n" for form in forms if split_of[form] == split)


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def prepare_hershey(cache_dir, num_lines=3000, seed=0, data_dir=None, verbose=True):
    """Generate (once) the synthetic lines and prepare them through iam.py; returns the h5 path.

    The XML files are rendered into <cache_dir>/hershey-<num_lines>-seed<seed>/, the prepared file is
    <cache_dir>/hershey-<num_lines>-seed<seed>.h5; later calls reuse both. A `data_dir` is read, never written:
    it must hold such a rendered folder (a copy of the cache's), whose lines are then prepared.
    """
    if int(num_lines) < 3:
        raise DataError(f"hershey needs num_lines >= 3 (one writer for each split), got {num_lines}")
    num_lines, seed = int(num_lines), int(seed)
    tag = f"hershey-{num_lines}-seed{seed}"
    stamp = f"hershey generator {GENERATOR_VERSION}, {num_lines} lines, seed {seed}\n"
    note = ""
    if data_dir is not None:
        xml_dir = os.path.join(os.path.abspath(os.path.expanduser(data_dir)), tag)
        if read_text(os.path.join(xml_dir, "GENERATED")) != stamp:
            raise DataError(
                f"--data-dir {data_dir} holds no rendered hershey set ({xml_dir}/GENERATED of generator "
                f"{GENERATOR_VERSION}); the embedded set needs no --data-dir: drop it, and the lines are rendered "
                "into the cache (a data directory is only read)"
            )
    else:
        xml_dir = os.path.join(cache_dir, tag)
        # A killed rendering leaves its folder (~19 MB for 3000 lines); prepare() removes it under the lock, and
        # here those of processes that no longer run go.
        remove_orphaned_temps(xml_dir)
        if read_text(os.path.join(xml_dir, "GENERATED")) != stamp:
            start = time.time()
            tmp = temp_path(xml_dir)
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            try:
                generate(tmp, num_lines, seed)
                with open(os.path.join(tmp, "GENERATED"), "w") as f:
                    f.write(stamp)
                shutil.rmtree(xml_dir, ignore_errors=True)  # an older generator's output
                os.replace(tmp, xml_dir)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            note = f"rendered {num_lines} lines in {time.time() - start:.1f} s"
    return prepare_iam(
        xml_dir,
        os.path.join(cache_dir, tag + ".h5"),
        seed=seed,
        name="hershey",
        verbose=verbose,
        note=note,
        split_lists=SPLIT_LISTS,
    )
