"""The online recognizer (pyro_vrnn/nn/recognizer.py, run/recognize.py): edit distance and CER by hand, greedy CTC
decoding, a CTC loss that falls, and the script's training and reading on a few embedded lines."""

import json
import os

import numpy as np
import pytest
import torch
from conftest import load_script

from pyro_vrnn import data as datasets
from pyro_vrnn.nn.recognizer import Recognizer, character_error_rate, edit_distance, pad


def test_edit_distance_and_cer():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    assert character_error_rate(["kitten", "ab"], ["sitting", "abc"]) == pytest.approx(4 / 10)


class Fixed(Recognizer):
    """A recognizer whose output is given: symbols per step."""

    def __init__(self, symbols):
        super().__init__("ab", 0, 1, hidden=2, layers=1)
        self.symbols = symbols

    def forward(self, x, lengths):
        return torch.log_softmax(10 * torch.nn.functional.one_hot(self.symbols, 3).float(), -1).transpose(0, 1)


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    symbols = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 0], [2, 0, 2, 2, 1, 1, 1, 1]])  # 0: blank, 1: a, 2: b
    assert Fixed(symbols).read(torch.zeros(2, 8, 3), torch.tensor([8, 5])) == ["aab", "bba"]


def test_ctc_loss_falls_on_a_few_lines(lines_with_text):
    train = datasets.load("hdf5", data_dir=lines_with_text, verbose=False)["train"]
    torch.manual_seed(0)
    recognizer = Recognizer("".join(sorted(set("".join(train.texts)))), train.mean, train.std, hidden=16, layers=1)
    x, lengths = pad([train[i] for i in range(4)])
    targets, target_lengths = recognizer.targets(train.texts[:4])
    ctc = torch.nn.CTCLoss(zero_infinity=True)
    optimizer = torch.optim.Adam(recognizer.parameters(), lr=0.02)
    losses = []
    for _ in range(25):
        loss = ctc(recognizer(x, lengths), targets, lengths, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_recognize_script_trains_and_reads(lines_with_text, tmp_path):
    script = load_script("recognize")
    out = str(tmp_path / "rec")
    result = script.main(["--dataset", "hdf5", "--data-dir", lines_with_text, "--out", out, "--epochs", "2",
                          "--hidden", "8", "--layers", "1"])  # fmt: skip
    assert sorted(os.listdir(out)) == ["cer.json", "last.pt", "log.jsonl", "recognizer.pt"]
    with open(os.path.join(out, "cer.json")) as f:
        saved = json.load(f)
    assert saved["split"] == "test" and saved["lines"] == 7 and saved["cer"] == pytest.approx(result["cer"])
    assert len(open(os.path.join(out, "log.jsonl")).readlines()) == 2
    # reading lines in data units: the test lines themselves, un-normalized
    test = datasets.load("hdf5", data_dir=lines_with_text, verbose=False)["test"]
    files = []
    for i in range(2):
        files.append(str(tmp_path / f"line-{i}.npy"))
        np.save(files[-1], test[i].numpy() * test.std + test.mean)
    cer = script.main(["--read", *files, "--text", test.texts[0], "--out", out])
    assert 0 <= cer
    with pytest.raises(SystemExit, match="holds an array of shape"):
        np.save(str(tmp_path / "bad.npy"), np.zeros((4, 2)))
        script.main(["--read", str(tmp_path / "bad.npy"), "--out", out])


def test_reading_what_a_model_writes(lines_with_text, tmp_path):
    from pyro_vrnn.train.config import make_config
    from pyro_vrnn.train.loop import train

    script = load_script("recognize")
    out = str(tmp_path / "rec")
    script.main(["--dataset", "hdf5", "--data-dir", lines_with_text, "--out", out, "--epochs", "1", "--hidden", "4",
                 "--layers", "1"])  # fmt: skip
    sizes = dict(hidden=8, x_features=4, dec_hidden=4, components=2, max_steps=1, threads=1)
    run = train(make_config("hdf5", model="crnn-gmm", data_dir=lines_with_text, out=str(tmp_path / "run"), **sizes))
    result = script.main(["--written-by", run, "--phrases", "3", "--out", out, "--bias", "1"])
    train_texts = set(datasets.load("hdf5", data_dir=lines_with_text, verbose=False)["train"].texts)
    assert result["phrases"] == 3 and not {e["truth"] for e in result["examples"]} & train_texts
    assert result["cer"] >= 0 and os.path.exists(os.path.join(out, "written_cer.json"))


def test_a_resumed_recognizer_ends_with_the_weights_of_one_run(lines_with_text, tmp_path):
    """1 epoch, then --resume to 3, gives the weights of 3 epochs in one call (Adam's state and the epoch's batches
    are restored); the log holds all three epochs; a mismatched --lr or a finished run is one line."""
    script = load_script("recognize")
    flags = ["--dataset", "hdf5", "--data-dir", lines_with_text, "--hidden", "8", "--layers", "1", "--lr", "0.01"]
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    script.main([*flags, "--out", whole, "--epochs", "3"])
    script.main([*flags, "--out", parts, "--epochs", "1"])
    script.main([*flags, "--out", parts, "--epochs", "3", "--resume"])
    one, two = (torch.load(os.path.join(d, "last.pt"), weights_only=True) for d in (whole, parts))
    assert one["epoch"] == two["epoch"] == 3
    for name, value in one["model"].items():
        assert torch.equal(value, two["model"][name]), name
    assert [json.loads(line)["epoch"] for line in open(os.path.join(parts, "log.jsonl"))] == [1, 2, 3]
    with pytest.raises(SystemExit, match="was trained with lr 0.01 \\(now 0.02\\)"):
        script.main([*flags[:-1], "0.02", "--out", parts, "--epochs", "4", "--resume"])
    with pytest.raises(SystemExit, match="has done 3 epochs already; raise --epochs"):
        script.main([*flags, "--out", parts, "--epochs", "3", "--resume"])
    with pytest.raises(SystemExit, match="no .*last.pt; train without --resume first"):
        script.main([*flags, "--out", str(tmp_path / "none"), "--epochs", "3", "--resume"])
