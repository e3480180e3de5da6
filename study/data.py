"""The datasets of the study, loaded as CPU tensors ready for training.

``load_dataset(name, ...)`` returns a :class:`Dataset` with float32 inputs
(``(N, C, H, W)`` images, ``(N, 2)`` for ``xor``) and int64 labels.

Where the data comes from:

- ``digits``: scikit-learn's bundled ``load_digits`` (1797 8×8 images), split
  into train/test by a stratified split seeded with ``data_seed`` (test
  fraction 0.2: 1437 train, 360 test). Always available, no network.
- ``mnist``, ``fashion_mnist``: the four IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte``; gzipped or not), read directly from
  ``ROOT/MNIST/raw`` or ``ROOT/mnist`` (``ROOT/FashionMNIST/raw`` or
  ``ROOT/fashion-mnist`` for Fashion-MNIST, then the Debian package
  ``dataset-fashion-mnist`` in ``/usr/share/datasets/fashion-mnist``).
- ``cifar10``: the python pickle batches in ``ROOT/cifar-10-batches-py``
  (``data_batch_1`` … ``data_batch_5``, ``test_batch``).
- ``svhn``: ``train_32x32.mat`` and ``test_32x32.mat`` in ``ROOT/svhn`` or
  ``ROOT`` (label 10 is the digit 0).
- ``xor``: synthetic, points uniform in ``[-1, 1]²`` labelled 1 where
  ``x1·x2 > 0`` and 0 otherwise (the XOR task used for MLPs by Wen et al.);
  1000 test points and 1000 (or ``train_size``) training points, seeded by
  ``data_seed``.

``ROOT`` is the ``root`` argument, else ``$STUDY_DATA``, else
``~/.cache/study/data``. The files are read by this module itself, not by
torchvision's dataset classes (those check the MD5 of every CIFAR/SVHN file,
so they reject anything but the official files); torchvision is used only
to download a missing dataset when ``download=True``.

Preprocessing, in this order:

1. pixels scaled to ``[0, 1]``, then standardised per channel with the mean
   and (population) standard deviation of the *whole* training split, before
   any subsetting or label noise, so that every ``train_size`` and noise
   level of a study sees the same input transform; the test split uses the
   same statistics. ``xor`` is left unscaled.
2. ``train_size``: a seeded, stratified subset of the training split
   (class proportions kept to within one example per class; for ``xor`` the
   training set is generated at that size instead).
3. ``label_noise = p``: each training label independently, with probability
   ``p``, replaced by a label drawn uniformly from all classes (it may draw
   the old label, so about ``p·(1 − 1/C)`` of the labels change), as in
   Zhang et al. 2017 "Understanding deep learning requires rethinking
   generalization". Test labels are never changed.

Every draw comes from a NumPy generator seeded by ``data_seed`` and a fixed
tag per purpose: same arguments, same dataset, on every machine.

The raw load (steps before options) is memoised per process, so a worker
that trains many networks reads each dataset once. Returned datasets share
the cached tensors where the options leave them unchanged: treat them as
read-only (never modify ``x_train`` etc. in place).
"""

from __future__ import annotations

import functools
import gzip
import math
import numbers
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10", "svhn", "xor")

#: Where the Debian package ``dataset-fashion-mnist`` puts its IDX files.
SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

DIGITS_TEST_FRACTION = 0.2
XOR_TRAIN_SIZE = 1000
XOR_TEST_SIZE = 1000

_NUM_CLASSES = {"digits": 10, "fashion_mnist": 10, "mnist": 10, "cifar10": 10, "svhn": 10, "xor": 2}
# Training-set sizes of the official data (None: no limit, the set is generated).
_TRAIN_COUNTS: dict[str, int | None] = {
    "digits": 1797 - math.ceil(1797 * DIGITS_TEST_FRACTION),
    "fashion_mnist": 60000,
    "mnist": 60000,
    "cifar10": 50000,
    "svhn": 73257,
    "xor": None,
}
# Seed tags: one independent random stream per purpose.
_TAG_SUBSET, _TAG_NOISE, _TAG_XOR_TRAIN, _TAG_XOR_TEST = 1, 2, 3, 4


class DatasetUnavailable(RuntimeError):
    """The dataset is not on disk and could not be fetched; the message says how to get it."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """One dataset: CPU tensors, float32 inputs and int64 labels in ``[0, num_classes)``."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple:
        """The shape of one input: ``(C, H, W)`` for images, ``(D,)`` for vectors."""
        return tuple(self.x_train.shape[1:])


# --------------------------------------------------------------------------- options


def check_dataset_options(name, train_size, label_noise) -> None:
    """Raise ``ValueError`` naming the problem if the options cannot be valid.

    Checks only what is known without loading: the name, that ``train_size``
    is ``None`` or a positive integer not above the official training-set
    size, and that ``label_noise`` is a number in ``[0, 1]``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    if train_size is not None:
        if isinstance(train_size, bool) or not isinstance(train_size, numbers.Integral):
            raise ValueError(f"train_size must be a positive integer or None, got {train_size!r}")
        if train_size < 1:
            raise ValueError(f"train_size must be a positive integer, got {train_size}")
        available = _TRAIN_COUNTS[name]
        if available is not None and train_size > available:
            raise ValueError(
                f"train_size={train_size} is above the {available} training examples of {name}")
    if isinstance(label_noise, bool) or not isinstance(label_noise, numbers.Real):
        raise ValueError(f"label_noise must be a number in [0, 1], got {label_noise!r}")
    if not 0.0 <= float(label_noise) <= 1.0:  # also rejects NaN
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")


def _check_seed(data_seed) -> None:
    if isinstance(data_seed, bool) or not isinstance(data_seed, numbers.Integral) or data_seed < 0:
        raise ValueError(f"data_seed must be a non-negative integer, got {data_seed!r}")


def _rng(data_seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([int(data_seed), tag])


def stratified_subset(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a random subset of ``size`` examples whose class counts are
    the proportional shares of ``size`` rounded by largest remainder (each within
    one of ``size·n_c/N``); within a class the examples are drawn uniformly."""
    labels = np.asarray(labels)
    if not 0 < size <= len(labels):
        raise ValueError(f"subset size must be in [1, {len(labels)}], got {size}")
    classes, counts = np.unique(labels, return_counts=True)
    shares = counts * size / len(labels)
    take = np.floor(shares).astype(np.int64)
    short = size - int(take.sum())
    if short:
        # Largest remainder first; ties broken at random, not by class order.
        order = np.lexsort((rng.permutation(len(classes)), -(shares - take)))
        take[order[:short]] += 1
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def randomise_labels(labels: torch.Tensor, p: float, num_classes: int,
                     rng: np.random.Generator) -> torch.Tensor:
    """A new label tensor: each label, with probability ``p``, replaced by one drawn
    uniformly from ``range(num_classes)`` (Zhang et al. 2017); ``labels`` is not modified."""
    n = labels.shape[0]
    flip = rng.random(n) < p
    new = rng.integers(0, num_classes, size=n)
    out = labels.numpy().copy()
    out[flip] = new[flip]
    return torch.from_numpy(out).to(torch.int64)


# --------------------------------------------------------------------------- loading


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root``, else ``$STUDY_DATA``, else ``~/.cache/study/data``."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("STUDY_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "study" / "data"


def load_dataset(name: str, *, train_size: int | None = None, label_noise: float = 0.0,
                 data_seed: int = 0, root: str | None = None, download: bool = True) -> Dataset:
    """Load a dataset of the study with its options applied (see the module docstring).

    Raises ``ValueError`` for bad options and :class:`DatasetUnavailable` when the
    data is absent and ``download`` is false or the download fails.
    """
    check_dataset_options(name, train_size, label_noise)
    _check_seed(data_seed)
    folder = str(data_root(root).resolve())
    if name == "xor":
        raw = _raw_xor(train_size or XOR_TRAIN_SIZE, int(data_seed))
    elif name == "digits":
        raw = _raw_digits(int(data_seed))
    else:
        raw = _raw_files(name, folder, bool(download))
    x_train, y_train, x_test, y_test = raw
    num_classes = _NUM_CLASSES[name]

    if train_size is not None and name != "xor":
        if train_size > len(y_train):
            raise ValueError(f"train_size={train_size} is above the {len(y_train)} training "
                             f"examples of {name} found in {folder}")
        if train_size < len(y_train):
            idx = torch.from_numpy(stratified_subset(y_train.numpy(), train_size,
                                                     _rng(data_seed, _TAG_SUBSET)))
            x_train, y_train = x_train[idx].contiguous(), y_train[idx].contiguous()
    if label_noise > 0:
        y_train = randomise_labels(y_train, float(label_noise), num_classes,
                                   _rng(data_seed, _TAG_NOISE))
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes)


def clear_cache() -> None:
    """Forget every memoised raw load (frees memory; the next load reads the files again)."""
    for fn in (_raw_xor, _raw_digits, _raw_files):
        fn.cache_clear()


def _channel_stats(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and population std of ``x / scale`` for (N, C, H, W)
    unsigned-byte images, from value histograms (no float rounding, little memory)."""
    values = np.arange(256, dtype=np.float64) / scale
    mean, std = np.empty(x.shape[1]), np.empty(x.shape[1])
    for c in range(x.shape[1]):
        hist = np.bincount(x[:, c].ravel(), minlength=256)
        n = hist.sum()
        mean[c] = (hist * values).sum() / n
        std[c] = math.sqrt((hist * (values - mean[c]) ** 2).sum() / n)
    std[std == 0] = 1.0  # a constant channel is only centred
    return mean, std


def _as_bytes(x) -> np.ndarray:
    """``x`` as uint8, refusing values that are not whole numbers in 0..255."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        if x.size and (x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x))):
            raise ValueError(f"expected pixel values that are whole numbers in 0..255, got {x.dtype} "
                             f"values in [{x.min()}, {x.max()}]")
        x = x.astype(np.uint8)
    return x


def _images(x_train: np.ndarray, y_train, x_test: np.ndarray, y_test, scale: float):
    """(N, C, H, W) unsigned-byte arrays → ``x/scale`` standardised per channel with the
    training split's mean and population std; contiguous float32 and int64 tensors."""
    x_train, x_test = _as_bytes(x_train), _as_bytes(x_test)
    mean, std = _channel_stats(x_train, scale)
    shape = (1, -1) + (1,) * (x_train.ndim - 2)
    a = torch.from_numpy(1.0 / (scale * std)).to(torch.float32).reshape(shape)  # x·a + b
    b = torch.from_numpy(-mean / std).to(torch.float32).reshape(shape)

    def transform(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32).mul_(a).add_(b).contiguous()

    ytr = torch.from_numpy(np.asarray(y_train, dtype=np.int64).reshape(-1).copy())
    yte = torch.from_numpy(np.asarray(y_test, dtype=np.int64).reshape(-1).copy())
    return transform(x_train), ytr, transform(x_test), yte


@functools.lru_cache(maxsize=8)
def _raw_xor(n_train: int, data_seed: int):
    def points(n, tag):
        x = _rng(data_seed, tag).uniform(-1.0, 1.0, size=(n, 2))
        y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
        return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)

    x_test, y_test = points(XOR_TEST_SIZE, _TAG_XOR_TEST)
    x_train, y_train = points(n_train, _TAG_XOR_TRAIN)
    return x_train, y_train, x_test, y_test


@functools.lru_cache(maxsize=8)
def _raw_digits(data_seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.reshape(-1, 1, 8, 8).astype(np.uint8)  # integer values 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(images, bunch.target, test_size=DIGITS_TEST_FRACTION,
                                              stratify=bunch.target, random_state=data_seed)
    return _images(x_tr, y_tr, x_te, y_te, scale=16.0)


@functools.lru_cache(maxsize=4)
def _raw_files(name: str, folder: str, download: bool):
    root = Path(folder)
    reader = _READERS[name]
    found = reader(root)
    if found is None:
        if not download:
            raise DatasetUnavailable(_how_to_get(name, root, "download=False"))
        try:
            _fetch(name, root)
        except Exception as err:  # no network, server down, disk full, …
            raise DatasetUnavailable(_how_to_get(name, root, f"the download failed: {err!r}")) from err
        found = reader(root)
        if found is None:
            raise DatasetUnavailable(_how_to_get(name, root, "the download left no readable files"))
    return found


# --------------------------------------------------------------------------- file formats

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_STEMS = ("train-images", "train-labels", "t10k-images", "t10k-labels")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (LeCun's MNIST format), gzipped or not, into a NumPy array."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    ndim = raw[3]
    offset = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:offset])
    count = math.prod(shape)
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{path}: header says shape {shape} ({count * dtype.itemsize} bytes of data), "
                         f"file holds {len(raw) - offset} bytes; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype, count, offset).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_file(folder: Path, stem: str) -> Path | None:
    kind = "idx3-ubyte" if stem.endswith("images") else "idx1-ubyte"
    for base in (f"{stem}-{kind}", f"{stem}.{kind}"):
        for name in (base, base + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _idx_folders(name: str, root: Path) -> list[Path]:
    if name == "mnist":
        return [root / "MNIST" / "raw", root / "mnist"]
    return [root / "FashionMNIST" / "raw", root / "fashion-mnist", SYSTEM_FASHION_MNIST]


def _read_idx_set(name: str, root: Path):
    for folder in _idx_folders(name, root):
        files = [_idx_file(folder, stem) for stem in _IDX_STEMS]
        if all(files):
            x_tr, y_tr, x_te, y_te = (read_idx(f) for f in files)
            for x, y, f in ((x_tr, y_tr, files[0]), (x_te, y_te, files[2])):
                if x.ndim != 3 or len(x) != len(y):
                    raise ValueError(f"{f}: expected N×H×W images matching {len(y)} labels, "
                                     f"got shape {x.shape}")
            return _images(x_tr[:, None], y_tr, x_te[:, None], y_te, scale=255.0)
    return None


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:  # CIFAR's own format is a pickle: only read trusted data folders
        entry = pickle.load(fh, encoding="latin1")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}


def _read_cifar10(root: Path):
    folder = root / "cifar-10-batches-py"
    train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
    test_file = folder / "test_batch"
    if not all(f.is_file() for f in [*train_files, test_file]):
        return None

    def batches(files):
        entries = [_unpickle(f) for f in files]
        x = np.concatenate([_as_bytes(e["data"]).reshape(-1, 3, 32, 32)
                            for e in entries])
        y = np.concatenate([np.asarray(e["labels"], dtype=np.int64) for e in entries])
        return x, y

    return _images(*batches(train_files), *batches([test_file]), scale=255.0)


def _read_svhn(root: Path):
    for folder in (root / "svhn", root):
        train, test = folder / "train_32x32.mat", folder / "test_32x32.mat"
        if train.is_file() and test.is_file():
            import scipy.io

            def split(path):
                mat = scipy.io.loadmat(path)
                x = np.transpose(mat["X"], (3, 2, 0, 1))  # (H, W, C, N) → (N, C, H, W)
                y = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10  # label 10 is digit 0
                return x, y

            return _images(*split(train), *split(test), scale=255.0)
    return None


_READERS = {
    "mnist": functools.partial(_read_idx_set, "mnist"),
    "fashion_mnist": functools.partial(_read_idx_set, "fashion_mnist"),
    "cifar10": _read_cifar10,
    "svhn": _read_svhn,
}


# --------------------------------------------------------------------------- download and help


def _fetch(name: str, root: Path) -> None:
    """Download ``name`` into ``root`` with torchvision (needs network)."""
    from torchvision import datasets

    root.mkdir(parents=True, exist_ok=True)
    if name == "mnist":
        datasets.MNIST(str(root), train=True, download=True)
    elif name == "fashion_mnist":
        datasets.FashionMNIST(str(root), train=True, download=True)
    elif name == "cifar10":
        datasets.CIFAR10(str(root), train=True, download=True)
    elif name == "svhn":
        for split in ("train", "test"):
            datasets.SVHN(str(root / "svhn"), split=split, download=True)
    else:  # pragma: no cover - the generated and bundled datasets never reach here
        raise ValueError(f"{name} is not downloaded")


def _how_to_get(name: str, root: Path, why: str) -> str:
    if name in ("mnist", "fashion_mnist"):
        places = [str(p) for p in _idx_folders(name, root)]
        files = ", ".join(f"{s}-idx{'3' if s.endswith('images') else '1'}-ubyte[.gz]" for s in _IDX_STEMS)
        put = f"put {files} under {_idx_folders(name, root)[0]}"
    elif name == "cifar10":
        places = [str(root / "cifar-10-batches-py")]
        put = (f"unpack cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) "
               f"into {root} so that {places[0]}/data_batch_1..5 and test_batch exist")
    else:
        places = [str(root / "svhn"), str(root)]
        put = (f"put train_32x32.mat and test_32x32.mat "
               f"(http://ufldl.stanford.edu/housenumbers/) under {places[0]}")
    ways = [f"run with download=True on a machine with network access (torchvision fetches it into {root})",
            put]
    if name == "fashion_mnist":
        ways.insert(0, "`apt-get install dataset-fashion-mnist` "
                       f"(Debian/Ubuntu; installs {SYSTEM_FASHION_MNIST})")
    return (f"dataset {name} is not available ({why}); looked in: {', '.join(places)}. "
            f"To get it: " + "; or ".join(ways) + ". The data folder is the `root` argument, "
            f"else $STUDY_DATA, else ~/.cache/study/data.")
