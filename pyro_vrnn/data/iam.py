"""IAM-OnDB: online handwriting, one sequence per text line, prepared as the VRNN authors did.

Chung et al. (2015, Sec. 5) model IAM-OnDB lines as sequences x_t = (pen_t, dx_t, dy_t) with a
Bernoulli pen bit and a bivariate Gaussian (mixture) over the pen offsets (Graves 2013). The
authors' preparation (docs/paper.md, and their released `iamondb_utils.py`):

  * read every point (x, y) of a line's lineStrokes XML, strokes in file order;
  * flip y (the whiteboard's y axis points down);
  * pen = 1 at the last point of each stroke (the pen lifts after it), 0 elsewhere;
  * x_t = (pen_t, x_t - x_{t-1}, y_t - y_{t-1}) from the second point on;
  * standardize dx and dy with ONE mean and ONE std shared by both (pen stays 0/1), computed on
    the training split as the authors' code computes them (cle's SequentialPrepMixin.global_normalize,
    on the [T, 2] offsets): sums over both columns divided by the number of ROWS, so
    mean = mean(dx) + mean(dy) and std = sqrt(E[dx^2 + dy^2] - mean^2), about sqrt(2) times the pooled
    std. Table 1's IAM-OnDB numbers are log-densities of data scaled so: against the pooled std every
    step would score 2 log(sqrt 2) = log 2 = 0.69 nats lower (some 450 nats on a line of 650 points);
  * lines are not cut into pieces.

Files, as unpacked from lineStrokes-all.tar.gz (IAM-OnDB needs registration)::

    lineStrokes/a01/a01-000/a01-000u-01.xml     <WhiteboardCaptureSession><StrokeSet>
                                                   <Stroke ...><Point x= y= time=/>...</Stroke>...

Each line's transcription comes from IAM-OnDB's ascii-all.tar.gz where it is found under the data
directory: ascii/a01/a01-000/a01-000u.txt holds form a01-000u, its handwritten lines after a "CSR:"
line (and one blank line), one a line, so line a01-000u-02 writes the second. The cache stores them as
each sequence's `text` (schema.py) for the models conditioned on text; a line whose form has no such file
gets "" (and without any ascii file the cache has no text).

The official task lists (trainset.txt, testset_v.txt, testset_t.txt, testset_f.txt; one form id
such as "a01-000u" per line) give the split when found anywhere under the data directory:
trainset + testset_t + testset_f -> train, testset_v -> valid, as Graves (2013) and the VRNN authors
trained on every set but validation set 1 (their train list holds ~1,535 forms, ~10,800 lines) and
reported on it; the test split is empty (evaluate_ll then reports valid). Without lists, forms are
split at random (seeded), 90/5/5, so that no form spans two splits.
"""

import hashlib
import os
import re
import time
import xml.etree.ElementTree as ET

import numpy as np

from pyro_vrnn.data.schema import DataError, cached_source, write_h5

PREPARATION_VERSION = 5  # bump when the preparation below changes: every cache is rebuilt (5: texts)

IAM_URL = "https://fki.tic.heia-fr.ch/databases/iam-on-line-handwriting-database"
# A line file is "<form id>-<line number>.xml", e.g. a01-000u-01.xml of form a01-000u.
LINE_FILE = re.compile(r"^(?P<form>.+)-(?P<line>\d+)\.xml$")
SPLIT_LISTS = {"trainset.txt": "train", "testset_t.txt": "train", "testset_f.txt": "train", "testset_v.txt": "valid"}
RANDOM_SPLIT = {"test": 0.05, "valid": 0.05}  # in this order from a seeded permutation; the rest is train


# ---------------------------------------------------------------------------------------------
# One line
# ---------------------------------------------------------------------------------------------


def read_strokes(xml_path):
    """The strokes of a lineStrokes XML file: a list of float arrays [n_points, 2] of raw (x, y)."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        raise DataError(f"malformed lineStrokes XML in {xml_path}: {error}") from None
    except OSError as error:
        raise DataError(f"cannot read {xml_path}: {error}") from None
    stroke_set = root.find("StrokeSet")
    if stroke_set is None:
        raise DataError(f"malformed lineStrokes XML in {xml_path}: no <StrokeSet> element")
    strokes = []
    for stroke in stroke_set.iter("Stroke"):
        try:
            points = [(float(p.attrib["x"]), float(p.attrib["y"])) for p in stroke.iter("Point")]
        except (KeyError, ValueError) as error:
            raise DataError(
                f"malformed lineStrokes XML in {xml_path}: a <Point> without a numeric x and y ({error})"
            ) from None
        if points:
            strokes.append(np.array(points, dtype=np.float64))
    return strokes


def read_transcription(path):
    """The lines of an IAM-OnDB ascii file (ascii/a01/a01-000/a01-000u.txt): those after its "CSR:" line,
    up to the first blank line after them, stripped; [] where the file has no CSR section."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            rows = [row.strip() for row in f.read().splitlines()]
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from None
    if "CSR:" not in rows:
        return []
    lines = []
    for row in rows[rows.index("CSR:") + 1 :]:
        if row:
            lines.append(row)
        elif lines:
            break
    return lines


def strokes_to_offsets(strokes):
    """Raw whiteboard strokes -> [T, 3] rows (pen, dx, dy), exactly as the authors prepared them."""
    if not strokes:
        return np.zeros((0, 3))
    points = np.concatenate(strokes)
    points[:, 1] = -points[:, 1]  # flip y: the whiteboard's y axis points down
    pen = np.zeros(len(points))
    pen[np.cumsum([len(s) for s in strokes]) - 1] = 1.0  # the last point of each stroke
    offsets = np.diff(points, axis=0)
    return np.column_stack([pen[1:], offsets])  # from the second point on


def parse_line_strokes(xml_path):
    """One IAM-OnDB line -> np.ndarray [T, 3] of (pen, dx, dy), raw units, not normalized.

    T is the number of points minus one (the first point only anchors the offsets).
    """
    return strokes_to_offsets(read_strokes(xml_path))


def offsets_to_strokes(x, mean=None, std=None):
    """The inverse, for plotting: [T, 3] rows (pen, dx, dy) -> list of [n, 2] arrays of (x, y), y up.

    `mean`/`std` undo a normalization first. A new stroke starts after every row with pen = 1.
    """
    x = np.asarray(x, dtype=np.float64)
    if mean is not None:
        x = x * np.asarray(std) + np.asarray(mean)
    points = np.cumsum(np.vstack([np.zeros((1, 2)), x[:, 1:3]]), axis=0)
    pen = np.concatenate([[0.0], x[:, 0]]) > 0.5  # point 0 is the anchor, before row 0
    ends = np.flatnonzero(pen) + 1
    return [s for s in np.split(points, ends) if len(s)]


# ---------------------------------------------------------------------------------------------
# The whole database
# ---------------------------------------------------------------------------------------------


def missing_data_message(data_dir, what):
    return (
        f"IAM-OnDB not found: {what} under {data_dir}. IAM-OnDB needs registration: get "
        f"lineStrokes-all.tar.gz (and the task's split lists) from {IAM_URL}, unpack them there "
        f"or pass their location with --data-dir"
    )


def find_sources(data_dir, with_transcriptions=False):
    """(line files, split lists) under data_dir: {line id: path}, {list file name: path}; with_transcriptions,
    also the ascii files: {form id: path} of every FORM.txt inside an "ascii" folder.

    If a lineStrokes folder exists, only files in it count (the other IAM-OnDB archives hold
    whole-form XML files in the same format).
    """
    lines, lists, transcriptions = {}, {}, {}
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        dirs.sort()
        in_ascii = "ascii" in os.path.relpath(root, data_dir).split(os.sep)
        for file in sorted(files):
            path = os.path.join(root, file)
            if LINE_FILE.match(file):
                lines.setdefault(file[: -len(".xml")], path)
            elif file in SPLIT_LISTS:
                lists.setdefault(file, path)
            elif in_ascii and file.endswith(".txt"):
                transcriptions.setdefault(file[: -len(".txt")], path)
    in_line_strokes = {k: p for k, p in lines.items() if "lineStrokes" in os.path.relpath(p, data_dir).split(os.sep)}
    if with_transcriptions:
        return (in_line_strokes or lines), lists, transcriptions
    return (in_line_strokes or lines), lists


def fingerprint(data_dir, paths):
    """A string that changes whenever an input file is added, removed or touched."""
    digest = hashlib.sha256(f"preparation {PREPARATION_VERSION}\n".encode())
    for path in sorted(paths):
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, data_dir)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def read_split_lists(lists, split_lists=SPLIT_LISTS):
    """{form or line id: split} from the official task lists (one id per line, spaces ignored)."""
    split_of = {}
    for file, path in sorted(lists.items()):
        with open(path, encoding="utf-8", errors="replace") as f:
            for entry in f:
                entry = entry.strip()
                if entry:
                    split_of.setdefault(entry, split_lists[file])
    return split_of


def random_split(items, seed, held_out=RANDOM_SPLIT):
    """{item: split}: a seeded permutation of the sorted items, the first round(fraction x n) of it to the first split
    of `held_out`, the next to the second, the rest to train; one each at least once there are 3 items, so that
    there is something to validate on. The split of IAM-OnDB's forms (none spans two splits), of the speech sets'
    speakers, of chess's opening groups and of Shakespeare's plays."""
    items = sorted(items)
    order = np.random.default_rng(seed).permutation(len(items))
    counts = {split: int(round(fraction * len(items))) for split, fraction in held_out.items()}
    if len(items) >= 3:
        counts = {split: max(1, c) for split, c in counts.items()}
    split_of, start = {}, 0
    for split, count in counts.items():
        for i in order[start : start + count]:
            split_of[items[i]] = split
        start += count
    for i in order[start:]:
        split_of[items[i]] = "train"
    return split_of


def prepare_iam(data_dir, cache_path, seed=0, name="iam", verbose=True, note="", split_lists=SPLIT_LISTS):
    """Build (or reuse) the HDF5 cache of IAM-OnDB-format lines under `data_dir`; returns its path.

    The cache is rebuilt when the fingerprint of the XML files and split lists changes. When it
    is (re)built and `verbose`, one summary line is printed (with `note` appended). `split_lists`
    maps list files to splits (the embedded set keeps a test split of its own).
    """
    start_time = time.time()
    data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    if not os.path.isdir(data_dir):
        raise DataError(missing_data_message(data_dir, "no such directory"))
    line_files, lists, transcriptions = find_sources(data_dir, with_transcriptions=True)
    if not line_files:
        raise DataError(missing_data_message(data_dir, "no lineStrokes XML files (like a01-000u-01.xml)"))
    source = fingerprint(data_dir, list(line_files.values()) + list(lists.values()) + list(transcriptions.values()))
    if cached_source(cache_path) == source:
        return cache_path

    # Which split each line belongs to.
    form_of = {line_id: LINE_FILE.match(line_id + ".xml").group("form") for line_id in line_files}
    if "trainset.txt" in lists:
        listed = read_split_lists(lists, split_lists)
        split_of = {line_id: listed.get(line_id, listed.get(form)) for line_id, form in form_of.items()}
        split_of = {line_id: split for line_id, split in split_of.items() if split is not None}
        if not any(split == "train" for split in split_of.values()):
            raise DataError(
                f"the split lists {sorted(lists.values())} name none of the {len(line_files)} "
                f"line files under {data_dir}; check that they belong to this copy of IAM-OnDB"
            )
        how = "split lists"
    else:
        by_form = random_split(set(form_of.values()), seed)
        split_of = {line_id: by_form[form] for line_id, form in form_of.items()}
        how = f"random split by form, seed {seed}"

    # Parse every line (T = points - 1; lines with fewer than 2 points carry no step).
    raw = {split: [] for split in ("train", "valid", "test")}
    names = {split: [] for split in raw}
    texts = {split: [] for split in raw}
    form_lines = {form: read_transcription(path) for form, path in transcriptions.items()}
    skipped = 0
    for line_id in sorted(split_of):
        x = parse_line_strokes(line_files[line_id])
        if len(x) == 0:
            skipped += 1
            continue
        raw[split_of[line_id]].append(x)
        names[split_of[line_id]].append(line_id)
        written = form_lines.get(form_of[line_id], [])
        number = int(LINE_FILE.match(line_id + ".xml").group("line"))  # 1 for the form's first line
        texts[split_of[line_id]].append(written[number - 1] if 1 <= number <= len(written) else "")
    if not raw["train"]:
        raise DataError(f"no training line with at least two points under {data_dir}")

    # ONE mean and ONE std for dx and dy together, from the training lines only (docs/paper.md), computed
    # as the authors' code does (module docstring): the sums over both columns, divided by the rows.
    train_offsets = np.concatenate([x[:, 1:3] for x in raw["train"]]).astype(np.float64)
    rows = len(train_offsets)
    offset_mean = float(train_offsets.sum() / rows)
    offset_std = float(np.sqrt(max((train_offsets**2).sum() / rows - offset_mean**2, 0.0)))
    if not offset_std > 0:
        offset_std = 1.0
    mean = np.array([0.0, offset_mean, offset_mean])  # the pen bit stays 0/1
    std = np.array([1.0, offset_std, offset_std])
    splits = {split: [((x - mean) / std).astype(np.float32) for x in xs] for split, xs in raw.items()}
    write_h5(
        cache_path,
        splits,
        kind="handwriting",
        name=name,
        mean=mean,
        std=std,
        source=source,
        names=names,
        texts=texts if transcriptions else None,
    )

    if verbose:
        lengths = np.array([len(x) for xs in raw.values() for x in xs])
        extra = f", {skipped} empty lines skipped" if skipped else ""
        unlisted = len(line_files) - len(split_of)
        extra += f", {unlisted} unlisted lines left out" if unlisted else ""
        if transcriptions:
            extra += f", {sum(bool(t) for ts in texts.values() for t in ts)} with text"
        print(
            f"prepared {name}: train {len(raw['train'])} / valid {len(raw['valid'])} / "
            f"test {len(raw['test'])} lines ({how}{extra}); length {lengths.min()}-{lengths.max()} "
            f"(median {int(np.median(lengths))}); dim 3; {cache_path} "
            f"({time.time() - start_time:.1f} s{'; ' + note if note else ''})",
            flush=True,
        )
    return cache_path
