"""What a checkpoint holds, reading it back, and rebuilding the model it describes.

A checkpoint (`last.pt`, `best.pt`; written atomically by run_directory.RunDirectory.save) is a dict:

    version     CHECKPOINT_VERSION
    config      the resolved Config as a dict (sizes, model, cell, scoring, ...)
    data        what the model was trained on: kind, dim, name, mean, std, train size, fingerprint
    model       the network's state_dict; optimizer: Adam's
    progress    epoch, batch within it, step, early-stopping memory, the epoch's running sums, time
    rng         every random state, one per torchrun process (process.get_rng_state: tensors and numbers)

so that a run can be rebuilt (evaluation, sampling, figures) from its checkpoint alone, and a killed
run resumes exactly where it was.

A checkpoint is data, never code: it holds tensors, numbers, strings, lists and dicts only, and is read with
`torch.load(weights_only=True)`, whose unpickler builds nothing else. A crafted .pt that would run code when
unpickled (a `__reduce__` calling os.system) is refused in one line before anything in it runs. Checkpoints are
passed between people, and a model downloaded from anyone must not be able to run commands.
"""

import dataclasses
import math
import os
import pickle
import re

import numpy as np
import torch

from pyro_vrnn import models
from pyro_vrnn.train.config import config_from_dict
from pyro_vrnn.train.process import TrainingError, network_fits, numpy_state_as_data

CHECKPOINT_VERSION = 2  # 2: numpy's random state as a tensor (1: as a numpy array)
READABLE_VERSIONS = (1, 2)
# What a version-1 checkpoint needs beyond tensors and numbers: numpy's random state, a uint32 array. These
# rebuild exactly that (an array of 32-bit integers) and can call nothing else.
NUMPY_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy.core.multiarray._reconstruct (numpy._core in numpy 2)
VERSION_1_GLOBALS = [NUMPY_RECONSTRUCT, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
KEYS = ("version", "config", "data", "model", "optimizer", "progress", "rng")
# What evaluation, sampling and resuming read inside the records (anything else has a default).
INNER_KEYS = {"data": ("kind", "dim", "mean", "std", "median_length"), "progress": ("epoch", "batch", "step")}


def resolve_checkpoint(path):
    """A .pt file as is; a run directory -> its best.pt, else its last.pt."""
    if os.path.isdir(path):
        for name in ("best.pt", "last.pt"):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        return os.path.join(path, "best.pt")  # load_checkpoint says it is missing
    return path


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint dict at `path`, or one line saying why it cannot be used."""
    if not os.path.isfile(path):
        raise TrainingError(f"no checkpoint at {path}; pass a run directory that holds last.pt or a .pt file")
    try:
        with torch.serialization.safe_globals(VERSION_1_GLOBALS):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:  # torch's unpickler met something that is not data
        code = re.search(r"GLOBAL (\S+)|but got <class '([^']+)'>", str(error))
        if code is None:
            raise TrainingError(
                f"cannot read checkpoint {path} (UnpicklingError); it is not a pyro-vrnn checkpoint or it is damaged"
            ) from None
        found = code[1] or code[2]
        convert = (  # what an older pyro-vrnn could have written: numpy arrays, Python containers
            f"; if you wrote it yourself with an older pyro-vrnn, convert it once: python -c 'import "
            f'pyro_vrnn.train.checkpoints as c; c.convert_trusted("{path}")\''
            if found.split(".")[0] in ("numpy", "collections", "pyro_vrnn")
            else ""
        )
        raise TrainingError(
            f"refused to load {path}: it holds Python code or objects ({found}) that loading would run, and a "
            f"pyro-vrnn checkpoint holds data only (tensors, numbers, strings): do not use it{convert}"
        ) from None
    except Exception as error:  # a truncated or foreign file
        raise TrainingError(
            f"cannot read checkpoint {path} ({error.__class__.__name__}); "
            "it is not a pyro-vrnn checkpoint or it is damaged"
        ) from None
    if not isinstance(state, dict) or state.get("version") not in READABLE_VERSIONS:
        raise TrainingError(
            f"{path} is not a pyro-vrnn checkpoint of version {' or '.join(map(str, READABLE_VERSIONS))}; "
            "retrain with this version of the code"
        )
    missing = [key for key in KEYS if key not in state]
    missing += [
        f"{record}[{key!r}]"
        for record, keys in INNER_KEYS.items()
        if isinstance(state.get(record), dict)
        for key in keys
        if key not in state[record]
    ]
    missing += [key for key in ("config", "model", *INNER_KEYS) if key in state and not isinstance(state[key], dict)]
    if missing:
        raise TrainingError(f"{path} lacks {', '.join(missing)}: it is damaged or was not written by pyro-vrnn")
    return state


def convert_trusted(path):
    """Rewrite a checkpoint that an older pyro-vrnn wrote with Python objects in it (numpy arrays, tuples) as data
    only, in place. It is unpickled with weights_only=False, which runs whatever the file holds: for your own
    files only."""
    state = as_data(torch.load(path, map_location="cpu", weights_only=False))
    state["rng"] = [dict(rng, numpy=numpy_state_as_data(rng["numpy"])) for rng in state["rng"]]
    state["version"] = CHECKPOINT_VERSION
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)
    load_checkpoint(path)  # now loads as data
    print(f"converted {path}: it holds data only")


def as_data(value):
    """`value` with numpy arrays as tensors and numpy numbers as Python's, in dicts, lists and tuples."""
    if isinstance(value, dict):
        return type(value)((key, as_data(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(as_data(item) for item in value)
    if isinstance(value, np.ndarray):
        return torch.as_tensor(value)
    return value.item() if isinstance(value, np.generic) else value


def data_info(dataset):
    """What a checkpoint remembers of its training data (a SequenceDataset)."""
    return {
        "kind": dataset.kind,
        "dim": dataset.dim,
        "name": dataset.name,
        "mean": np.asarray(dataset.mean).tolist(),
        "std": np.asarray(dataset.std).tolist(),
        "median_length": int(np.median(dataset.lengths)),
        "train_sequences": len(dataset),
        "fingerprint": getattr(dataset, "fingerprint", None),
        "sample_rate": getattr(dataset, "sample_rate", None),  # audio frames (figures.audio_rate)
        "vocabulary": getattr(dataset, "vocabulary", None),  # kind "tokens": the V tokens, id k is vocabulary[k]
    }


def vocabulary_size(info):
    """V, the vocabulary's size, of token data (info: a data_info record), else None."""
    vocabulary = info.get("vocabulary")
    return len(vocabulary) if vocabulary is not None else None


def rebuild(state, device="cpu"):
    """(config, model, guide, vrnn, data_info) from a checkpoint, the network loaded and in eval mode."""
    try:
        config = config_from_dict(state["config"])
        info = state["data"]
        with network_fits(config, device, saved=True):  # a run trained on a machine with more memory: one line
            model, guide, vrnn = models.build(config, info["kind"], info["dim"], vocabulary_size(info))
    except (KeyError, TypeError, ValueError) as error:
        raise TrainingError(f"the checkpoint's config or data record is damaged ({error})") from None
    load_weights(vrnn, state["model"])
    with network_fits(config, device, saved=True):
        return config, model, guide, vrnn.to(device).eval(), info


def load_weights(module, weights):
    """load_state_dict, with a mismatch said in one line (the first differing tensor) instead of a dump."""
    own = module.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    wrong = [k for k in own if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        first = (
            f"{wrong[0]} is {tuple(weights[wrong[0]].shape)} in the checkpoint and {tuple(own[wrong[0]].shape)} "
            "in the network"
            if wrong
            else f"{(missing or unexpected)[0]} is "
            + ("missing from the checkpoint" if missing else "in the checkpoint but not in the network")
        )
        count = len(missing) + len(unexpected) + len(wrong)
        raise TrainingError(
            f"the checkpoint's weights do not fit the network its config describes ({count} "
            f"tensor(s) differ; e.g. {first}); was it written by another version?"
        )
    # Training never saves a non-finite weight (a step with a non-finite loss or gradient is not taken): such a file
    # is damaged, and every number computed from it would be NaN.
    broken = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        more = f" and {len(broken) - 1} other tensor(s)" if len(broken) > 1 else ""
        raise TrainingError(
            f"the checkpoint's weights hold NaN or inf ({broken[0]}{more}): it is damaged; use another checkpoint "
            "of the run (best.pt or last.pt) or train again"
        )
    module.load_state_dict(weights)


def check_same_data(info, dataset, what, advice="pass the --data-dir of the data it was trained on"):
    """Raise TrainingError unless `dataset` is the data (kind, dimension, normalization and, where both are
    known, the content fingerprint) the checkpoint's model was trained on; `what` names it in the message, `advice`
    says what to do about other sequences."""
    same_kind_and_normalization(info, dataset, what)
    same_fingerprint(info, dataset, what, advice)


def same_kind_and_normalization(info, dataset, what):
    if dataset.kind != info["kind"] or dataset.dim != info["dim"]:
        raise TrainingError(
            f"the model was trained on {info['kind']} data of dimension {info['dim']}, but "
            f"{what} is {dataset.kind} of dimension {dataset.dim}"
        )
    if info.get("vocabulary") != getattr(dataset, "vocabulary", None):
        raise TrainingError(
            f"{what} has another vocabulary than the data the model was trained on (token ids would mean other "
            "tokens); use the same data set"
        )
    if not (np.allclose(dataset.mean, info["mean"]) and np.allclose(dataset.std, info["std"])):
        raise TrainingError(
            f"{what} is normalized differently from the data the model was trained on (was the "
            "dataset rebuilt from other files?); log-likelihoods would not compare"
        )


def same_fingerprint(info, dataset, what, advice):
    """The content fingerprint of the file `dataset` is read from against the checkpoint's, where both are known: a
    file of the same kind, dimension and normalization may hold other sequences."""
    known = info.get("fingerprint"), getattr(dataset, "fingerprint", None)
    if None not in known and known[0] != known[1]:
        raise TrainingError(
            f"{what} holds other sequences than the run was trained on (content fingerprint "
            f"{known[1][:12]}, the run's {known[0][:12]}); {advice}"
        )


def check_same_training_data(info, dataset, what):
    """check_same_data, plus the training set's size: what resuming a run needs."""
    same_kind_and_normalization(info, dataset, what)
    trained_on = info.get("train_sequences", len(dataset))
    if len(dataset) != trained_on:
        raise TrainingError(
            f"{what} has {len(dataset)} sequences, the run was trained on {trained_on}; "
            "resume with the same data or start a new run"
        )
    same_fingerprint(info, dataset, what, "resume with the same data or start a new run")


@dataclasses.dataclass
class Progress:
    """Where a run is: what a checkpoint must hold to resume it exactly."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps in all
    best_valid: float = -math.inf  # best validation ELBO per sequence so far (the IWAE / FIVO bound if trained on)
    bad_epochs: int = 0  # epochs since it last improved
    epoch_loss: float = 0.0  # the current epoch's sum of loss x sequences (over every rank)
    epoch_sequences: float = 0.0
    elapsed: float = 0.0  # seconds of training before this process took over

    def finished(self, config):
        """What stops this run already, said for a message, or None if it can go on."""
        if self.epoch >= config.epochs:
            return f"has trained its {self.epoch} epochs (--epochs)"
        if config.max_steps is not None and self.step >= config.max_steps:
            return f"has taken its {self.step} steps (--max-steps)"
        if self.bad_epochs >= config.patience:
            return f"stopped early after {self.bad_epochs} epochs without a better validation bound (--patience)"
        return None
