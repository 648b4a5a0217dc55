"""docs/tutorial.md runs as written: every command in it, in order, at a tiny size.

How the tutorial is run:
  * every ```bash block is split into commands (one per line; `\\` continues a line; `#` starts a
    comment). A `python run/NAME.py ARGS` command runs that script in this process (as
    `python run/NAME.py ARGS TINY[NAME]` would: argparse lets a flag given twice take its last value,
    so the flags in TINY below shrink the networks, the number of steps and of samples while
    leaving every flag of the tutorial in force). Any other command runs in bash.
  * every ```python block is executed, in order, unless an `<!-- excerpt: PATH -->` comment comes
    right before it: then it is a quotation of the code, and each of its lines must be found in
    PATH (a line `...` stands for lines left out), so that the tutorial cannot drift from the code.
  * everything runs in a temporary directory (its runs/ land there), on the embedded data set
    prepared once for the test session (conftest.py);
  * afterwards every file under runs/ that the tutorial names must exist and be non-empty, and
    every .png a PNG; every image the page embeds must exist next to it.
"""

import os
import re
import runpy
import shlex
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import NETWORK

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(ROOT, "docs", "tutorial.md")


TINY = {
    "svi.py": ["--max-steps", "1", "--batch-size", "2", "--log-every", "1", *NETWORK],
    "table1.py": ["--max-steps", "1", "--num-samples", "2", *NETWORK],
    "sample.py": ["--length", "15"],
    "figure3.py": ["--num", "2", "--length", "15"],
    "analyze.py": [],
    "write.py": ["--num", "1", "--max-steps", "40"],
    "evaluate_ll.py": ["--num-samples", "2", "--batch-size", "256"],
}
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
EXCERPT = re.compile(r"<!--\s*excerpt:\s*(?P<path>\S+)\s*-->\s*$")
PNG = b"\x89PNG\r\n\x1a\n"


def blocks(text):
    """(lang, code, excerpt path or None) for every fenced block, in order."""
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip().rsplit("\n", 1)[-1]
        excerpt = EXCERPT.search(before)
        body = textwrap.dedent(
            "\n".join(
                line[len(m["indent"]) :] if line.startswith(m["indent"]) else line for line in m["body"].split("\n")
            )
        )
        yield m["lang"], body, excerpt["path"] if excerpt else None


def commands(code):
    """Shell lines of a bash block, continuations joined, as argument lists (comments dropped)."""
    code = re.sub(r"\\\n", " ", code)
    return [args for args in (shlex.split(line, comments=True) for line in code.split("\n")) if args]


def run_command(args):
    if args[0] == "python" and len(args) > 1 and args[1].startswith("run/"):
        script = os.path.join(ROOT, args[1])
        assert os.path.isfile(script), f"the tutorial runs {args[1]}, which does not exist"
        argv = [script, *args[2:], *TINY.get(os.path.basename(script), [])]
        saved = sys.argv
        sys.argv = argv
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as stop:
            assert stop.code in (None, 0), f"{' '.join(args)} exited with {stop.code}"
        finally:
            sys.argv = saved
    else:
        done = subprocess.run(["bash", "-c", shlex.join(args)], capture_output=True, text=True)
        assert done.returncode == 0, f"{shlex.join(args)} failed: {done.stderr[-2000:]}"


def read_tutorial():
    with open(TUTORIAL) as f:
        return f.read()


def test_excerpts_quote_the_code():
    text = read_tutorial()
    found = 0
    for lang, code, path in blocks(text):
        if path is None:
            continue
        found += 1
        with open(os.path.join(ROOT, path)) as f:
            source = [line.strip() for line in f]
        for line in code.split("\n"):
            line = line.strip()
            if line and line != "...":
                assert any(line in s for s in source), f"docs/tutorial.md quotes {path}, which has no line\n  {line}"
    assert found >= 5


def test_tutorial_runs_as_written(hershey_cache, tmp_path, monkeypatch):
    text = read_tutorial()
    monkeypatch.chdir(tmp_path)
    ran, start = [], time.time()
    for lang, code, path in blocks(text):
        if lang == "bash":
            for args in commands(code):
                t = time.time()
                run_command(args)
                ran.append((shlex.join(args), time.time() - t))
        elif lang == "python" and path is None:
            t = time.time()
            exec(compile(code, TUTORIAL, "exec"), {"__name__": "__tutorial__"})
            ran.append(("python block", time.time() - t))
    assert len(ran) >= 8
    print("\n".join(f"{seconds:6.1f} s  {what}" for what, seconds in ran), f"\n{time.time() - start:6.1f} s in all")
    # Every file the page points to was written by its commands.
    named = set(re.findall(r"runs/[\w./-]+\.(?:png|csv|wav|npz|pt|jsonl)", text))
    assert len(named) >= 5
    for name in sorted(named):
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 0, f"the tutorial names {name}, which no command wrote"
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == PNG, name
    for image in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text):
        assert os.path.isfile(os.path.join(ROOT, "docs", image)), f"the tutorial shows {image}, which is missing"


# ---- the same tutorial as a Jupyter notebook (docs/tutorial.ipynb, paired with the page by jupytext) ----

NOTEBOOK = os.path.join(ROOT, "docs", "tutorial.ipynb")


def notebook_cells(path):
    """(cell type, source) of every cell of a notebook or of a jupytext Markdown page."""
    jupytext = pytest.importorskip("jupytext")
    return [(cell.cell_type, cell.source.strip()) for cell in jupytext.read(path).cells]


def test_the_notebook_is_the_page():
    """docs/tutorial.ipynb holds exactly the cells of docs/tutorial.md (regenerate it with
    `jupytext --sync docs/tutorial.md` after editing the page)."""
    page, notebook = notebook_cells(TUTORIAL), notebook_cells(NOTEBOOK)
    assert len(page) == len(notebook) and page == notebook
    code = [source for kind, source in notebook if kind == "code"]
    commands = [line for source in code if source.startswith("%%bash") for line in source.splitlines()[1:]]
    assert sum(line.startswith("python run/") for line in commands) >= 8  # the commands run as bash cells
    assert not any("excerpt:" in source for source in code)  # quotations stay text


def tiny(source):
    """A %%bash cell with TINY's flags after each `python run/NAME.py ...` command and the scripts' paths made
    absolute (the notebook runs in a temporary directory)."""
    lines = []
    for line in source.split("\n"):
        words = line.split()
        if len(words) > 1 and words[0] == "python" and words[1].startswith("run/"):
            name = os.path.basename(words[1])
            line = " ".join(["python", os.path.join(ROOT, words[1]), *words[2:], *TINY.get(name, [])])
        lines.append(line)
    return "\n".join(lines)


def test_the_notebook_runs_at_a_tiny_size(hershey_cache, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell.source.startswith("%%bash"):
            cell.source = tiny(cell.source)
    # the kernel and the cells' `python` are this interpreter, with the test session's data cache
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not any(out.get("output_type") == "error" for out in outputs)
    assert (tmp_path / "runs" / "tutorial" / "vrnn-gmm" / "samples.png").is_file()
    assert (tmp_path / "runs" / "tutorial" / "figure3.png").is_file()
