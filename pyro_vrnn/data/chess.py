"""Chess moves (kind "tokens"): x_t is the t-th move of a game from the initial position, in UCI notation
("e2e4", "g8f6", "e7e8q"), the emission a categorical over the moves the data uses. Reported in nats per move,
with the top-1 accuracy of the next move and the fraction of sampled moves that are legal where they are played
(`legal_fraction`).

No corpus of whole games installs here. The most real play that does is Debian's `pgn-extract`, whose
/usr/share/pgn-extract/eco.pgn holds about 10,000 named opening lines of the ECO classification (e.g.
"B90 Sicilian, Najdorf": 1. e4 c5 2. Nf3 d6 3. d4 cxd4 4. Nxd4 Nf6 5. Nc3 a6), each a game's first moves as
played in master practice: that is the default source. (Debian's pychess ships some 1,300 lessons and
puzzles, most of them set up from a position, which a sequence of moves alone does not describe.)
`--data-dir` may name any PGN file, or a folder of them (e.g. one's own games): games that start from a set-up
position (a FEN header) or hold an illegal move are left out, and counted.

Preparation (python-chess, `pip install chess`, parses the PGN and checks every move):

  * each game's main line as UCI moves; identical move sequences are kept once (the first), so that no
    sequence is in two splits;
  * split by group, never within one: the ECO code where the game has one (so that every line of, say, B90
    is in the same split, and a test line is not a training line's extension by a move), else the game
    itself; a seeded permutation of the groups, 5% valid and 5% test (at least one each), the rest train;
  * the vocabulary: every move the data uses (all splits), sorted.

Caches are rebuilt when the PGN files or this preparation change.
"""

import hashlib
import io
import logging
import os
import time

import numpy as np

from pyro_vrnn.data.iam import random_split
from pyro_vrnn.data.schema import DataError, StreamWriter, cached_source, summary_line

PREPARATION_VERSION = 1  # bump when the conversion below changes: the cache is rebuilt
ECO_PGN = "/usr/share/pgn-extract/eco.pgn"
CHESS_HINT = "the chess dataset parses PGN with python-chess: pip install chess (or pip install 'pyro-vrnn[chess]')"
PGN_HINT = "apt-get install pgn-extract (its eco.pgn), or pass --data-dir with a PGN file or a folder of them"
HELD_OUT = 0.05  # of the groups, for each of valid and test


def import_chess():
    try:
        import chess
        import chess.pgn
    except ImportError:
        raise DataError(CHESS_HINT) from None
    return chess


def pgn_files(data_dir):
    """The PGN files to read: data_dir (a file, or every *.pgn under a folder), or eco.pgn by default."""
    path = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else ECO_PGN
    if os.path.isdir(path):
        files = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(path)
            for name in names
            if name.lower().endswith(".pgn")
        )
        if not files:
            raise DataError(f"no .pgn file under {path}; {PGN_HINT}")
        return files
    if not os.path.isfile(path):
        raise DataError(f"no PGN file at {path}; {PGN_HINT}")
    return [path]


def read_games(files):
    """([(group, name, [uci moves])], skipped): every game's main line from the initial position, once per
    distinct sequence of moves; `skipped` counts the games left out (set-up position, illegal or no moves)."""
    chess = import_chess()
    games, seen = [], set()
    skipped = dict.fromkeys(("set-up position", "illegal move", "no moves", "repeated", "unreadable rest of a file"), 0)
    logging.getLogger("chess.pgn").setLevel(logging.CRITICAL)  # illegal moves are counted, not printed
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        stream = io.StringIO(text)
        number = 0
        while True:
            try:  # python-chess logs a bad move (then in game.errors) and raises on some malformed files
                game = chess.pgn.read_game(stream)
            except Exception:  # noqa: BLE001  the rest of this file cannot be trusted: the next file
                skipped["unreadable rest of a file"] += 1
                break
            if game is None:
                break
            number += 1
            headers = game.headers
            if "FEN" in headers or headers.get("SetUp") == "1" or headers.get("Variant", "Standard") != "Standard":
                skipped["set-up position"] += 1
                continue
            if game.errors:
                skipped["illegal move"] += 1
                continue
            moves = tuple(move.uci() for move in game.mainline_moves())
            if not moves:
                skipped["no moves"] += 1
                continue
            if moves in seen:
                skipped["repeated"] += 1
                continue
            seen.add(moves)
            eco = headers.get("ECO", "?")
            label = " ".join(v for v in (headers.get("Opening", ""), headers.get("Variation", "")) if v and v != "?")
            group = f"ECO {eco}" if eco != "?" else f"{os.path.basename(path)} game {number}"
            games.append((group, f"{eco} {label}".strip() if eco != "?" else group, list(moves)))
    return games, {k: v for k, v in skipped.items() if v}


def split_groups(groups, seed=0):
    """{group: split}: a seeded permutation of the sorted groups, HELD_OUT each to valid and test (at least one)."""
    groups = sorted(set(groups))
    if len(groups) < 3:
        raise DataError(f"{len(groups)} group(s) of games cannot be split into train, valid and test: need 3 or more")
    return random_split(groups, seed, {"valid": HELD_OUT, "test": HELD_OUT})


def prepare_chess(data_dir, cache_dir, verbose=True, seed=0):
    """Build (or reuse) the move sequences of the PGN files; returns the cache's path."""
    files = pgn_files(data_dir)
    chess = import_chess()
    stamps = "; ".join(f"{p} {st.st_size} {st.st_mtime_ns}" for p, st in ((p, os.stat(p)) for p in files))
    source = f"{stamps}; python-chess {chess.__version__}; preparation {PREPARATION_VERSION}; seed {seed}"
    tag = hashlib.sha256(source.encode()).hexdigest()[:8]
    cache_path = os.path.join(cache_dir, f"chess-{tag}.h5")
    if cached_source(cache_path) == source:
        return cache_path
    start_time = time.time()
    games, skipped = read_games(files)
    if not games:
        raise DataError(f"no game from the initial position in {', '.join(files)}; {PGN_HINT}")
    split_of = split_groups([group for group, _, _ in games], seed)
    vocabulary = sorted({move for _, _, moves in games for move in moves})
    index = {move: k for k, move in enumerate(vocabulary)}
    with StreamWriter(cache_path, "tokens", "chess", 1, source, vocabulary=vocabulary) as writer:
        for group, name, moves in games:
            writer.add(split_of[group], np.asarray([index[m] for m in moves], dtype=np.float32)[:, None], name)
        writer.finish(normalize=False)
    if verbose:
        left_out = ", ".join(f"{n} {why}" for why, n in skipped.items())
        note = (
            f"{len(games)} games from {len(files)} PGN file(s){f' ({left_out} left out)' if left_out else ''}, "
            f"{sum(len(m) for _, _, m in games):,} moves, {len(vocabulary)} distinct, split by "
            f"{'ECO code' if games[0][0].startswith('ECO') else 'game'}, seed {seed}; {time.time() - start_time:.1f} s"
        )
        print(summary_line(cache_path, what="games", unit="moves", note=note), flush=True)
    return cache_path


def legal_fraction(games):
    """(legal, played): each game of UCI moves played from the initial position up to and with its first move
    that is not legal where it is played (the position after it is undefined); legal / played is the fraction
    of sampled moves that are legal in their position."""
    chess = import_chess()
    legal = played = 0
    for moves in games:
        board = chess.Board()
        for uci in moves:
            played += 1
            try:
                move = chess.Move.from_uci(uci)
            except ValueError:
                break
            if move not in board.legal_moves:
                break
            legal += 1
            board.push(move)
    return legal, played
