"""Train an online handwriting recognizer (BiLSTM + CTC over the pen offsets; pyro_vrnn/nn/recognizer.py) on a data
set's training lines and their texts, and report its character error rate (CER) on held-out lines; or read
lines that a model wrote (run/write.py) with a trained one.

    python run/recognize.py                                            # hershey: train, CER on its test lines
    python run/recognize.py --dataset iam --data-dir data/iam-ondb --epochs 30
    python run/recognize.py --read runs/RUN/write/write-*.npy --text "the old river"
    python run/recognize.py --written-by runs/RUN --phrases 100 --bias 1   # CER of what a model writes

Training writes, into --out (default runs/recognizer): recognizer.pt (the weights with the best validation
CER), last.pt (the weights, Adam's state and the epoch, after every epoch; both written atomically),
log.jsonl (one record an epoch: loss, validation CER) and cer.json (the test CER, or validation's where the
set has no test lines). `--resume` goes on from last.pt to --epochs in all (a killed or --max-minutes run):
the batches of each epoch depend only on the seed and the epoch, so the weights come out as one run's would.
--read prints what each file says and the CER against --text. --written-by has a model conditioned on text
(run/write.py's) write --phrases phrases of the embedded vocabulary that no training line says, reads them,
and writes their CER into OUT/written_cer.json.
"""

import argparse
import json
import math
import os
import pickle
import sys
import time

from pyro_vrnn.train.interrupts import one_line_ctrl_c, while_starting

if __name__ == "__main__":  # torch and Pyro take seconds to import: a Ctrl-C meanwhile is one line
    while_starting()

import numpy as np
import pyro
import torch
from tqdm import tqdm

from pyro_vrnn import data as datasets
from pyro_vrnn.data import DataError
from pyro_vrnn.data.tempfiles import temp_path
from pyro_vrnn.nn.recognizer import Recognizer, character_error_rate, pad, read_dataset
from pyro_vrnn.nn.text_window import training_alphabet
from pyro_vrnn.report.figures import Run
from pyro_vrnn.report.synthesis import phrases, write_lines
from pyro_vrnn.train.flag_checks import check_bias, check_output_dir, check_seed
from pyro_vrnn.train.process import TrainingError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="hershey", choices=sorted(datasets.DATASETS), help="default hershey")
    p.add_argument("--data-dir", help="where the dataset's files are")
    p.add_argument("--out", default=os.path.join("runs", "recognizer"), help="default runs/recognizer")
    p.add_argument("--epochs", type=int, default=20, help="passes over the training lines (default 20)")
    p.add_argument("--max-minutes", type=float, help="stop training after this many minutes (of this call)")
    p.add_argument("--resume", action="store_true", help="go on from OUT/last.pt up to --epochs in all")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden", type=int, default=128, help="LSTM units each way (default 128)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--read", nargs="+", metavar="FILE.npy", help="lines to read ([T, 3] in data units), not train")
    p.add_argument("--text", help="what the --read lines should say, for their CER")
    p.add_argument("--checkpoint", help="the recognizer.pt that --read uses (default OUT/recognizer.pt)")
    p.add_argument("--written-by", metavar="RUN", help="a cvrnn-gmm or crnn-gmm run: read what it writes")
    p.add_argument("--phrases", type=int, default=100, help="phrases --written-by writes (default 100)")
    p.add_argument("--bias", type=float, default=0.0, help="the sampling bias --written-by writes with")
    return p.parse_args(argv)


def save_atomically(state, path):
    tmp = temp_path(path)
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(args):
    splits = datasets.load(args.dataset, args.data_dir)
    train_set, valid_set = splits["train"], splits["valid"]
    alphabet = training_alphabet(splits.values())  # the texts of every split, as the text models take it
    held_out = splits["test"] if len(splits["test"]) else valid_set
    torch.manual_seed(args.seed)
    recognizer = Recognizer(alphabet, train_set.mean, train_set.std, args.hidden, args.layers)
    optimizer = torch.optim.Adam(recognizer.parameters(), lr=args.lr)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    with_text = [i for i in range(len(train_set)) if train_set.texts[i]]
    sampler = datasets.LengthBucketSampler(train_set.lengths[with_text], args.batch_size, seed=args.seed)
    os.makedirs(args.out, exist_ok=True)
    path, log_path = os.path.join(args.out, "recognizer.pt"), os.path.join(args.out, "log.jsonl")
    last_path = os.path.join(args.out, "last.pt")
    best, first, start = math.inf, 0, time.time()
    state = {"alphabet": alphabet, "hidden": args.hidden, "layers": args.layers}
    if args.resume:
        best, first = resume(args, last_path, state, recognizer, optimizer)
    epoch = first - 1
    with open(log_path, "a" if args.resume else "w") as log:
        for epoch in range(first, args.epochs):
            sampler.set_epoch(epoch)
            total = 0.0
            for batch in tqdm(list(sampler), desc=f"epoch {epoch + 1}/{args.epochs}", leave=False):
                indices = [with_text[i] for i in batch]
                x, lengths = pad([train_set[i] for i in indices])
                targets, target_lengths = recognizer.targets([train_set.texts[i] for i in indices])
                loss = ctc(recognizer(x, lengths), targets, lengths, target_lengths)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(recognizer.parameters(), 5.0)
                optimizer.step()
                total += loss.item() * len(indices)
            cer = character_error_rate(*read_dataset(recognizer, valid_set))
            record = {
                "epoch": epoch + 1,
                "ctc_loss": total / len(with_text),
                "valid_cer": cer,
                "time": time.time() - start,
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(f"epoch {epoch + 1}: CTC loss {record['ctc_loss']:.3f}, valid CER {cer:.3f}", flush=True)
            if cer < best:
                best = cer
                save_atomically(dict(state, model=recognizer.state_dict()), path)
            progress = dict(epoch=epoch + 1, best_cer=best, seed=args.seed, batch_size=args.batch_size, lr=args.lr)
            save_atomically(
                dict(state, model=recognizer.state_dict(), optimizer=optimizer.state_dict(), **progress), last_path
            )
            if args.max_minutes is not None and time.time() - start > 60 * args.max_minutes:
                print(f"stopping after {args.max_minutes:g} minutes", flush=True)
                break
    recognizer.load_state_dict(torch.load(path, weights_only=True)["model"])
    read, truth = read_dataset(recognizer, held_out)
    split = "test" if held_out is splits["test"] else "valid"
    result = {"split": split, "lines": len(truth), "cer": character_error_rate(read, truth), "epochs": epoch + 1}
    result["examples"] = [{"truth": t, "read": r} for t, r in list(zip(truth, read))[:10]]
    with open(os.path.join(args.out, "cer.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"{split} CER {result['cer']:.3f} over {len(truth)} lines; wrote {path}", flush=True)
    return result


def resume(args, last_path, state, recognizer, optimizer):
    """Load last.pt into the recognizer and Adam; (best validation CER so far, epochs done). One line if it is
    missing or was trained with other settings."""
    try:
        saved = torch.load(last_path, weights_only=True)  # data only: a checkpoint never runs code
    except OSError:
        raise TrainingError(f"--resume: no {last_path}; train without --resume first") from None
    except (RuntimeError, pickle.UnpicklingError) as error:
        raise TrainingError(f"--resume: {last_path} is not a recognizer checkpoint ({error})") from None
    ours = dict(state, seed=args.seed, batch_size=args.batch_size, lr=args.lr)
    theirs = {key: saved.get(key) for key in ours}
    if theirs != ours:
        changed = ", ".join(f"{k} {theirs[k]!r} (now {ours[k]!r})" for k in ours if theirs[k] != ours[k])
        raise TrainingError(f"--resume: {last_path} was trained with {changed}; pass the same settings")
    if saved["epoch"] >= args.epochs:
        raise TrainingError(f"--resume: {last_path} has done {saved['epoch']} epochs already; raise --epochs")
    recognizer.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    return saved["best_cer"], saved["epoch"]


def load_recognizer(path):
    try:
        state = torch.load(path, weights_only=True)  # data only: a checkpoint never runs code
        recognizer = Recognizer(state["alphabet"], np.zeros(3), np.ones(3), state["hidden"], state["layers"])
        recognizer.load_state_dict(state["model"])
    except (OSError, KeyError, RuntimeError, pickle.UnpicklingError) as error:
        raise TrainingError(f"{path} is not a recognizer checkpoint ({error}); train one with run/recognize.py")
    return recognizer.eval()


def read_written(args):
    """The CER of lines that a model conditioned on text writes from phrases that no training line says."""
    recognizer = load_recognizer(args.checkpoint or os.path.join(args.out, "recognizer.pt"))
    run = Run(args.written_by)
    seen = set(run.dataset("train", args.data_dir).texts)
    alphabet = "".join(c for c in run.vrnn.alphabet if c in recognizer.alphabet)
    texts, seed = [], args.seed
    while len(texts) < args.phrases:
        seed += 1
        texts += [t for t in phrases(alphabet, args.phrases, seed, run.config.longest_text) if t not in seen]
        texts = list(dict.fromkeys(texts))[: args.phrases]
    pyro.set_rng_seed(args.seed)
    lines, finished = write_lines(run, texts, args.bias)
    read = recognizer.read(*pad([recognizer.normalize(line) for line in lines]))
    result = {
        "written_by": run.path,
        "bias": args.bias,
        "phrases": len(texts),
        "finished": sum(finished),
        "cer": character_error_rate(read, texts),
        "examples": [{"truth": t, "read": r} for t, r in list(zip(texts, read))[:10]],
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "written_cer.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(
        f"CER {result['cer']:.3f} on {len(texts)} phrases written by {run.describe()} "
        f"({sum(finished)} ended by the window)"
    )
    return result


def read_files(args):
    recognizer = load_recognizer(args.checkpoint or os.path.join(args.out, "recognizer.pt"))
    lines = []
    for path in args.read:
        try:
            line = np.load(path)
        except (OSError, ValueError) as error:
            raise TrainingError(f"cannot read {path} ({error}); give the .npy files that run/write.py writes")
        if line.ndim != 2 or line.shape[1] != 3 or len(line) == 0:
            raise TrainingError(f"{path} holds an array of shape {line.shape}; a line is [T, 3] (pen, dx, dy)")
        lines.append(recognizer.normalize(line))
    read = recognizer.read(*pad(lines))
    for path, text in zip(args.read, read):
        print(f"{path}: {text!r}")
    if args.text is not None:
        cer = character_error_rate(read, [args.text] * len(read))
        print(f"CER {cer:.3f} against {args.text!r}")
        return cer
    return read


@one_line_ctrl_c("the best recognizer so far is in OUT/recognizer.pt")
def main(argv=None):
    args = parse_args(argv)
    try:
        check_seed(args.seed)
        check_bias(args.bias)
        if args.epochs < 1 or args.batch_size < 1 or args.hidden < 1 or args.layers < 1:
            raise TrainingError("--epochs, --batch-size, --hidden and --layers must be at least 1")
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.read:
            return read_files(args)
        if args.written_by:
            return read_written(args)
        check_output_dir(args.out, "--out")
        return train(args)
    except (DataError, TrainingError, ValueError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
