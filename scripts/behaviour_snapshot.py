"""A behaviour snapshot for refactors: run a fixed set of commands and record a digest of everything they write.

    python scripts/behaviour_snapshot.py run OUT            # with the osteoscreen that `python -m` finds
    PYTHONPATH=OTHER/src python scripts/behaviour_snapshot.py run OUT2   # another checkout's code
    python scripts/behaviour_snapshot.py compare OUT OUT2   # every file, stdout, stderr and exit code that differs

The commands (about 3 minutes on 2 cores): synth (PNG and DICOM), validate, patches, cv (frozen, repeated 3-fold,
a baseline and two heads), train with a target sensitivity, predict on a dataset and on one image, landmarks
train/suggest (one epoch), and bad input. A refactor that changes no behaviour leaves every digest the same.
Digests ignore what changes from run to run by design: timestamps, durations, package versions and the output
folder's own path (JSON members by name, text by pattern); weights are compared by their tensors, since their
file's metadata holds the digest of model.json, which holds its creation time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

VOLATILE_KEYS = re.compile(r"created|seconds|wall|elapsed|duration|versions|^osteoscreen$|weights_sha256")
VOLATILE_TEXT = [re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"), re.compile(r"\d+(\.\d+)? ?s\b"),
                 re.compile(r"osteoscreen \d+\.\d+\.\d+")]


def commands(out: Path) -> list[tuple[str, list[str]]]:
    data, dicom = str(out / "data"), str(out / "dicom")
    first = "P001"
    return [
        ("synth", ["synth", data, "--n", "24", "--positives", "12", "--seed", "5"]),
        ("synth-dicom", ["synth", dicom, "--n", "6", "--positives", "3", "--seed", "6", "--format", "dicom"]),
        ("validate", ["validate", data]),
        ("validate-dicom", ["validate", dicom]),
        ("patches", ["patches", data, "--out", str(out / "patches")]),
        ("cv", ["cv", data, "--out", str(out / "cv"), "--methods", "knn-lbp,concat,group-attention",
                "--protocol", "kfold", "--folds", "3", "--repeats", "1"]),
        ("train", ["train", data, "--out", str(out / "model"), "--target-sensitivity", "0.8"]),
        ("predict", ["predict", str(out / "model"), data, "--out", str(out / "predict")]),
        ("predict-dicom", ["predict", str(out / "model"), dicom, "--out", str(out / "predict-dicom"), "--no-figures"]),
        ("landmarks-train", ["landmarks", "train", data, "--out", str(out / "lmodel"), "--epochs", "1"]),
        ("landmarks-suggest", ["landmarks", "suggest", str(out / "lmodel"), dicom, "--out",
                               str(out / "suggested.csv")]),
        ("bad-dataset", ["validate", str(out / "missing")]),
        ("bad-model", ["predict", data, data, "--out", str(out / "bad")]),
        ("bad-flag", ["cv", data, "--out", str(out / "bad"), "--folds", "1"]),
        ("one-image", ["predict", str(out / "model"), str(out / "data" / "images" / f"{first}.png"), "--landmarks",
                       str(out / "one.json"), "--out", str(out / "one")]),
    ]


def _landmarks_of_first(out: Path) -> None:
    """one.json: the first subject's landmarks, for the single-image prediction."""
    import csv

    with open(out / "data" / "landmarks.csv") as handle:
        rows = [row for row in csv.DictReader(handle) if row["subject_id"] == "P001"]
    (out / "one.json").write_text(json.dumps({row["landmark"]: [float(row["x"]), float(row["y"])] for row in rows}))


def run(out: Path) -> None:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=False)
    streams = {}
    for name, arguments in commands(out):
        if name == "one-image":
            _landmarks_of_first(out)
        done = subprocess.run([sys.executable, "-m", "osteoscreen.cli", *arguments], capture_output=True, text=True,
                              env={**os.environ, "TQDM_DISABLE": "1"})
        streams[name] = {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}
        print(f"{name}: exit {done.returncode}", flush=True)
    (out / "streams.json").write_text(json.dumps(streams, indent=1))
    digests = {str(path.relative_to(out)): digest(path, out) for path in sorted(out.rglob("*")) if path.is_file()
               and path.name != "snapshot.json" and "cache" not in path.relative_to(out).parts}
    (out / "snapshot.json").write_text(json.dumps(digests, indent=1))


def _normalised(value, out: str):
    if isinstance(value, dict):
        return {k: _normalised(v, out) for k, v in value.items() if not VOLATILE_KEYS.search(k)}
    if isinstance(value, list):
        return [_normalised(v, out) for v in value]
    if isinstance(value, str):
        return _text(value, out)
    return value


def _text(text: str, out: str) -> str:
    text = text.replace(out, "<OUT>")
    for pattern in VOLATILE_TEXT:
        text = pattern.sub("<volatile>", text)
    return text


def digest(path: Path, out: Path) -> str:
    """sha256 of the file's behaviour: JSON without its volatile members, text without volatile patterns, the
    tensors of a safetensors file, any other file's bytes."""
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        content = b"".join(name.encode() + tensors[name].tobytes() for name in sorted(tensors))
    elif path.suffix == ".json":
        content = json.dumps(_normalised(json.loads(path.read_text()), str(out)), sort_keys=True).encode()
    elif path.suffix in {".csv", ".md", ".html", ".txt", ".log"}:
        content = _text(path.read_text(), str(out)).encode()
    else:
        content = path.read_bytes()
    return hashlib.sha256(content).hexdigest()


def compare(a: Path, b: Path) -> int:
    first, second = (json.loads((folder / "snapshot.json").read_text()) for folder in (a, b))
    changed = sorted(name for name in set(first) | set(second) if first.get(name) != second.get(name))
    for name in changed:
        print(f"differs: {name}" if name in first and name in second else
              f"only in {a if name in first else b}: {name}")
    print(f"{len(changed)} of {len(set(first) | set(second))} files differ")
    return 1 if changed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("run").add_argument("out", type=Path)
    both = actions.add_parser("compare")
    both.add_argument("a", type=Path)
    both.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.action == "run":
        run(args.out)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
