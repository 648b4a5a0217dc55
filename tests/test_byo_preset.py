"""`--dataset hdf5` sizes itself from the user's data (pyro_vrnn/train/byo_preset.py): sensible numbers at every
size, explicit flags first, and a few hundred short sequences trained to early stopping."""

import json
import os

import numpy as np

from pyro_vrnn.data.byo import train_sizes
from pyro_vrnn.data.schema import write_h5
from pyro_vrnn.train.config import Config, byo_preset, make_config
from pyro_vrnn.train.loop import train

SIZES = ("hidden", "z_dim", "x_features", "components", "batch_size")


def write_noise(path, sequences, steps, dim, seed=0):
    """Sequences of standard normal frames, standardized as the README asks of real data."""
    rng = np.random.default_rng(seed)
    splits = {
        split: [rng.normal(size=(steps, dim)).astype(np.float32) for _ in range(n)]
        for split, n in (("train", sequences), ("valid", 40), ("test", 0))
    }
    write_h5(str(path), splits, kind="real", name="noise", mean=np.zeros(dim), std=np.ones(dim), source="tests")
    return str(path)


def test_the_preset_grows_with_the_data_within_bounds():
    grid = [(n, n * t, d) for n in (20, 243, 3000, 50000) for t in (10, 100, 1000) for d in (1, 12, 200)]
    for n, steps, d in grid:
        p = byo_preset(n, steps, d)
        assert 32 <= p["hidden"] <= 1024 and 4 <= p["z_dim"] <= 64 and 2 <= p["components"] <= 20
        assert 8 <= p["batch_size"] <= 64 and 50 <= p["epochs"] <= 1000 and 10 <= p["patience"] <= 50
        assert p["patience"] < p["epochs"] and 1e-4 <= p["lr"] <= 1e-3
        assert p["x_features"] == p["dec_hidden"] == p["hidden"] // 2
        assert p["threads"] == (1 if p["hidden"] <= 256 else 0)
        for more in ((2 * n, 2 * steps, d), (n, 4 * steps, d), (n, steps, 4 * d)):  # more data, never smaller
            q = byo_preset(*more)
            assert all(q[k] >= p[k] for k in ("hidden", "z_dim", "x_features")), (more, p, q)
            assert q["lr"] <= p["lr"]
        assert byo_preset(2 * n, 2 * steps, d)["batch_size"] >= p["batch_size"]
        assert byo_preset(n, 4 * steps, d)["components"] >= p["components"]
    small, large = byo_preset(243, 4802, 12), byo_preset(26018, 26018 * 40, 200)
    assert (small["hidden"], small["components"], small["batch_size"], small["lr"]) == (64, 10, 16, 1e-3)
    assert (large["hidden"], large["components"], large["batch_size"], large["lr"]) == (1024, 20, 64, 3e-4)
    # an epoch of a few hundred sequences is a dozen steps or more; patience ~400 steps
    assert 243 / small["batch_size"] >= 12 and small["patience"] * 16 >= 400


def test_the_file_sizes_the_run_and_flags_override_it(tmp_path):
    path = write_noise(tmp_path / "mine.h5", sequences=243, steps=20, dim=12)
    assert train_sizes(path) == (243, 243 * 20, 12, "real")
    config = make_config("hdf5", data_dir=path)
    preset = byo_preset(243, 243 * 20, 12)
    assert {k: getattr(config, k) for k in preset} == preset
    mine = make_config("hdf5", data_dir=path, hidden=40, lr=0.01, components=3, patience=None)
    assert (mine.hidden, mine.lr, mine.components, mine.patience) == (40, 0.01, 3, preset["patience"])
    assert mine.z_dim == preset["z_dim"]  # what is not given stays the preset's
    # no file, or one that is not HDF5: the defaults; loading the data then says what is wrong
    (tmp_path / "text.h5").write_text("not hdf5")
    for data_dir in (None, str(tmp_path / "absent.h5"), str(tmp_path / "text.h5")):
        assert make_config("hdf5", data_dir=data_dir).hidden == Config.hidden


def test_the_preset_picks_the_lever_that_keeps_z_in_use_for_the_data_and_model(tmp_path):
    """docs/ablations.md, "The bring-your-own preset's lever": binary data anneal the KL weight over ~400 updates,
    real data with a single-Gaussian VRNN take free bits, a mixture emission and the RNNs neither; a flag given,
    and a particle bound (no KL term), win over the preset's lever."""
    real = write_noise(tmp_path / "real.h5", sequences=243, steps=20, dim=12)
    rng = np.random.default_rng(0)
    rolls = {
        s: [(rng.random((30, 88)) < 0.1).astype(np.float32) for _ in range(n)]
        for s, n in (("train", 700), ("valid", 20))
    }
    binary = str(tmp_path / "rolls.h5")
    write_h5(binary, rolls, kind="binary", name="rolls", mean=np.zeros(88), std=np.ones(88), source="tests")
    assert train_sizes(binary) == (700, 700 * 30, 88, "binary")
    # 700 rolls in batches of 32: 22 updates an epoch, so 19 epochs make the 400 updates
    levers = {m: make_config("hdf5", data_dir=binary, model=m) for m in ("vrnn-gauss", "vrnn-gmm", "srnn", "rnn-gauss")}
    assert [(c.kl_anneal_epochs, c.free_bits) for c in levers.values()] == [(19, 0.0)] * 3 + [(0.0, 0.0)]
    assert levers["vrnn-gauss"].batch_size == 32
    gauss, gmm = make_config("hdf5", data_dir=real, model="vrnn-gauss"), make_config("hdf5", data_dir=real)
    assert (gauss.free_bits, gauss.kl_anneal_epochs) == (0.05, 0.0)
    assert (gmm.model, gmm.free_bits, gmm.kl_anneal_epochs) == ("vrnn-gmm", 0.0, 0.0)
    assert make_config("hdf5", data_dir=real, model="vrnn-gauss", free_bits=0.0).free_bits == 0.0  # the flag wins
    assert make_config("hdf5", data_dir=binary, kl_anneal_epochs=0.0).kl_anneal_epochs == 0.0
    # the updates are counted in the batches that train: 700 rolls in batches of 100 make 7 an epoch
    assert make_config("hdf5", data_dir=binary, batch_size=100).kl_anneal_epochs == 58
    fivo = make_config("hdf5", data_dir=binary, model="vrnn-gauss", elbo="fivo", particles=4)
    assert (fivo.kl_anneal_epochs, fivo.free_bits) == (0.0, 0.0)  # no KL term to weigh


def test_early_stopping_waits_for_the_kl_annealing_to_end(tmp_path, monkeypatch):
    """Until the KL weight reaches 1 the model trains on another objective: epochs without a better validation ELBO
    are not counted against --patience before then. A learning rate of 1e-9 learns nothing, so the stochastic
    validation ELBO improves only by chance, and patience alone would stop the run within the annealing."""
    monkeypatch.setenv("PYRO_VRNN_CACHE", str(tmp_path / "cache"))
    path = write_noise(tmp_path / "noise.h5", sequences=64, steps=8, dim=2)
    sizes = dict(hidden=8, z_dim=2, x_features=8, z_features=8, enc_hidden=8, prior_hidden=8, dec_hidden=8)
    common = dict(model="vrnn-gauss", data_dir=path, device="cpu", lr=1e-9, batch_size=16, epochs=30, **sizes)
    stopped = {}
    for anneal in (0.0, 8.0):
        config = make_config("hdf5", out=str(tmp_path / f"run{anneal}"), kl_anneal_epochs=anneal, patience=2, **common)
        with open(os.path.join(train(config, quiet=True), "log.jsonl")) as f:
            records = [json.loads(line) for line in f]
        stopped[anneal] = sum(r["event"] == "epoch" for r in records)
        assert records[-1]["reason"] == "early_stopping"
    assert stopped[0.0] < 8 + 2 <= stopped[8.0]


def test_a_few_hundred_short_sequences_train_to_early_stopping(tmp_path, monkeypatch):
    """The preset's epoch budget is a ceiling that early stopping comes in under: 300 sequences of
    8 steps of white noise, nothing to learn past the first epochs, stop after `patience` epochs."""
    monkeypatch.setenv("PYRO_VRNN_CACHE", str(tmp_path / "cache"))
    path = write_noise(tmp_path / "noise.h5", sequences=300, steps=8, dim=2)
    config = make_config("hdf5", model="rnn-gauss", data_dir=path, out=str(tmp_path / "run"), device="cpu")
    assert config.epochs >= 10 * config.patience
    run_dir = train(config, quiet=True)
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        records = [json.loads(line) for line in f]
    end = records[-1]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert end["event"] == "end" and end["reason"] == "early_stopping", end
    assert len(epochs) < config.epochs
    best = max(epochs, key=lambda r: r["valid_elbo_per_seq"])
    assert len(epochs) == best["epoch"] + config.patience
    # white noise of 2 dimensions: about -2.84 nats a step at best (the true density's entropy)
    assert -3.1 < best["valid_elbo_per_step"] < -2.6
