"""The datasets of the study, loaded as CPU tensors ready for training.

``load_dataset(name, ...)`` returns a :class:`Dataset` with float32 inputs
(``(N, C, H, W)`` images, ``(N, dim)`` for ``xor``) and int64 labels.

Each dataset is one :class:`DatasetKind` subclass below, registered with
``@register`` in `DATASETS`: its name, classes, training-set size, and how its
data is generated, or read from files, fetched, and got by hand (a subclass of
a dataset in the same format, as ``FashionMNIST(MNIST)``, names only what
differs). Files are looked for under ``ROOT``: the ``root`` argument, else
``$STUDY_DATA``, else ``~/.cache/study/data``. This module reads them itself,
not torchvision's dataset classes (those check the MD5 of every CIFAR/SVHN
file, so they reject anything but the official files); torchvision only
downloads a missing dataset when ``download=True``. CIFAR-10's batches are
pickles, and unpickling can run code: each is unpickled only when its MD5 is
the official file's (the digests torchvision lists), with an unpickler that
builds nothing but arrays, lists and strings; any other file is an error
naming it. No other format here is a pickle (IDX is parsed by hand, SVHN's
.mat files by ``scipy.io.loadmat``, which runs no code).

Preprocessing, in this order:

1. pixels scaled to ``[0, 1]``, then standardised per channel with the mean
   and (population) standard deviation of the *whole* training split, before
   any subsetting or label noise, so that every ``train_size`` and noise
   level of a study sees the same input transform; the test split uses the
   same statistics. ``xor`` is left unscaled.
2. ``train_size``: a seeded, stratified subset of the training split
   (class proportions kept to within one example per class; for ``xor`` the
   training set is generated at that size instead).
3. ``binary``: classes below C/2 become 0, the others 1 (training and test labels).
4. ``label_noise = p``: each training label independently, with probability
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

import codecs
import functools
import gzip
import hashlib
import inspect
import io
import math
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field

from .options import Options, did_you_mean, parse

# Seed tags: one independent random stream per purpose.
_TAG_SUBSET, _TAG_NOISE, _TAG_XOR_TRAIN, _TAG_XOR_TEST = 1, 2, 3, 4
Raw = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # x_train, y_train, x_test, y_test


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


class DataOptions(Options):
    """What fixes a dataset's content besides its name. The run id holds the first three
    always and a later option only when set away from its default (`Options.ID_ALWAYS`), so
    the runs stored before it existed keep their ids.

    ``binary`` (a dataset of C ≥ 4 classes, C even): classes 0 … C/2 − 1 become 0 and the
    rest 1 (binary MNIST's "digit ≥ 5", Dziugaite & Roy 2017), after the ``train_size``
    subset and before ``label_noise``. ``dim``, ``boolean``, ``test_size`` (``xor`` only): the
    input dimension, inputs on the cube {−1, 1}^dim (Wen et al. 2023's Boolean XOR) instead of
    uniform in [−1, 1]^dim, and the number of test points."""
    ID_ALWAYS = ("train_size", "label_noise", "data_seed")
    train_size: int | None = Field(None, ge=1)   # a stratified subset of the training split
    label_noise: float = Field(0.0, ge=0, le=1)  # chance that a training label is redrawn
    data_seed: int = Field(0, ge=0)
    binary: bool = False                          # classes < C/2 → 0, the others → 1
    dim: int = Field(2, ge=2, le=2**16)           # xor: the input dimension
    boolean: bool = False                         # xor: inputs on {−1, 1}^dim
    test_size: int | None = Field(None, ge=1)     # xor: test points (None: the dataset's default)


class DataSource(Options):
    """Where the data is read from (in no run id): the data folder (`data_root`) and whether a
    missing dataset may be downloaded."""
    root: str | None = Field(None, description="a path")
    download: bool = True


#: The options of `DataOptions` that only some datasets take (`DatasetKind.takes`).
SPECIFIC_OPTIONS = ("binary", "dim", "boolean", "test_size")


class DatasetKind:
    """One dataset of the study: subclass, set the class attributes, and give either
    ``raw`` (generated data) or, for data in files, ``read`` (the data from the files
    under ``root``, None where absent), ``places`` (the folders it looks in) and
    ``by_hand`` (how to put the files there); ``fetch`` downloads with the torchvision
    class named ``torchvision``. Then decorate the class with ``@register``."""

    name: ClassVar[str]
    num_classes: ClassVar[int] = 10
    train_count: ClassVar[int | None] = None  # size of the training split; None: generated at any size
    input_shape: ClassVar[tuple[int, ...]]  # the shape of one input, as the study file is checked
    torchvision: ClassVar[str] = ""
    hint: ClassVar[str] = ""  # another way to get the data, said first
    takes: ClassVar[tuple[str, ...]] = ("binary",)  # its `SPECIFIC_OPTIONS`

    def shape(self, o: DataOptions) -> tuple[int, ...] | None:
        """The shape of one input under the options ``o`` (None where the class does not say:
        the study file's model check is then skipped)."""
        return getattr(self, "input_shape", None)

    def classes(self, o: DataOptions) -> int:
        """The number of classes under the options ``o`` (2 with ``binary``)."""
        return 2 if o.binary else self.num_classes

    def check_options(self, given) -> None:
        """Raise ``ValueError`` naming an option of `SPECIFIC_OPTIONS` in ``given`` (names) that
        this dataset does not take."""
        for name in SPECIFIC_OPTIONS:
            if name in given and name not in self.takes:
                which = [k.name for k in DATASETS.values() if name in k.takes]
                raise ValueError(f"{name} is an option of {', '.join(which)}, not of {self.name}")
        if "binary" in given and (self.num_classes < 4 or self.num_classes % 2):
            raise ValueError(f"binary needs an even number of classes ≥ 4; {self.name} has {self.num_classes}")

    def raw(self, root: Path, download: bool) -> Raw:
        """The whole standardised data, before options. Its parameters, by name, are the
        load arguments it depends on (``root``, ``download``, ``data_seed``, ``train_size``):
        the result is memoised per process on them."""
        found = self.read(root)
        if found is None:
            if not download:
                raise DatasetUnavailable(self.how_to_get(root, "download=False"))
            try:
                self.fetch(root)
            except Exception as err:  # no network, server down, disk full, …
                raise DatasetUnavailable(self.how_to_get(root, f"the download failed: {err!r}")) from err
            found = self.read(root)
            if found is None:
                raise DatasetUnavailable(self.how_to_get(root, "the download left no readable files"))
        return found

    def read(self, root: Path) -> Raw | None:
        raise NotImplementedError

    def present(self, root: Path) -> bool:
        """Whether the files ``read`` needs are under ``root`` (without reading them); generated
        data is always present."""
        return True

    def train_examples(self, train_size: int | None) -> int:
        """How many training examples a run with ``train_size`` trains on."""
        return train_size or self.train_count or getattr(self, "train_default", 0)

    def places(self, root: Path) -> list[Path]:
        return [root]

    def by_hand(self, root: Path) -> str:
        raise NotImplementedError

    def fetch(self, root: Path) -> None:
        from torchvision import datasets
        root.mkdir(parents=True, exist_ok=True)
        getattr(datasets, self.torchvision)(str(root), train=True, download=True)

    def how_to_get(self, root: Path, why: str) -> str:
        ways = [*filter(None, [self.hint]), "run with download=True on a machine with network access "
                f"(torchvision fetches it into {root})", self.by_hand(root)]
        return (f"dataset {self.name} is not available ({why}); looked in: "
                f"{', '.join(map(str, self.places(root)))}. To get it: " + "; or ".join(ways)
                + ". The data folder is the `root` argument, else $STUDY_DATA, else ~/.cache/study/data.")

    def check(self, train_size: int | None) -> None:
        """Raise ``ValueError`` if ``train_size`` is above the training split."""
        if train_size is not None and self.train_count is not None and train_size > self.train_count:
            raise ValueError(f"train_size={train_size} is above the {self.train_count} training "
                             f"examples of {self.name}")


DATASETS: dict[str, type[DatasetKind]] = {}


def register(kind: type[DatasetKind]) -> type[DatasetKind]:
    """Make ``kind`` a dataset of the study, under ``kind.name``."""
    DATASETS[kind.name] = kind
    return kind


def dataset_kind(name: str) -> DatasetKind:
    """The registered dataset ``name``."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}{did_you_mean(name, DATASETS)}; datasets: {', '.join(DATASETS)}")
    return DATASETS[name]()


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


def load_dataset(name: str, options: DataOptions | None = None, *, root: str | os.PathLike | None = None,
                 download: bool = True, **given) -> Dataset:
    """Load a dataset of the study with its options applied (see the module docstring): the
    typed ``options``, else the keywords ``given`` (``train_size``, ``label_noise``, …), from the
    data folder ``root`` (`data_root`). Raises ``ValueError`` for bad options and
    :class:`DatasetUnavailable` when the data is absent and ``download`` is false or fails."""
    o = options if options is not None else parse(DataOptions, given)
    kind = dataset_kind(name)
    kind.check_options({k for k in SPECIFIC_OPTIONS if getattr(o, k) != DataOptions.model_fields[k].default})
    kind.check(o.train_size)
    folder = data_root(root).resolve()
    known = {"root": folder, "download": bool(download)}
    wants = inspect.signature(type(kind).raw).parameters
    args = tuple((k, known[k] if k in known else getattr(o, k)) for k in wants
                 if k in known or k in DataOptions.model_fields)
    x_train, y_train, x_test, y_test = _raw(type(kind), args)
    if o.train_size is not None and kind.train_count is not None:
        if o.train_size > len(y_train):
            raise ValueError(f"train_size={o.train_size} is above the {len(y_train)} training "
                             f"examples of {name} found in {folder}")
        if o.train_size < len(y_train):
            idx = torch.from_numpy(stratified_subset(y_train.numpy(), o.train_size,
                                                     _rng(o.data_seed, _TAG_SUBSET)))
            x_train, y_train = x_train[idx].contiguous(), y_train[idx].contiguous()
    if o.binary:
        half = kind.num_classes // 2
        y_train, y_test = (y_train >= half).to(torch.int64), (y_test >= half).to(torch.int64)
    classes = kind.classes(o)
    if o.label_noise > 0:
        y_train = randomise_labels(y_train, o.label_noise, classes, _rng(o.data_seed, _TAG_NOISE))
    return Dataset(name, x_train, y_train, x_test, y_test, classes)


@functools.lru_cache(maxsize=8)
def _raw(kind: type[DatasetKind], args: tuple) -> Raw:
    return kind().raw(**dict(args))


def clear_cache() -> None:
    """Forget every memoised raw load (frees memory; the next load reads the files again)."""
    _raw.cache_clear()


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


# --------------------------------------------------------------------------- the datasets


@register
class Digits(DatasetKind):
    """scikit-learn's bundled ``load_digits`` (1797 8×8 images), split by a stratified split
    seeded with ``data_seed`` (1437 train, 360 test). Always available, no network."""
    name = "digits"
    input_shape = (1, 8, 8)
    test_fraction = 0.2
    train_count = 1797 - math.ceil(1797 * test_fraction)

    def raw(self, data_seed: int) -> Raw:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        images = bunch.images.reshape(-1, 1, 8, 8).astype(np.uint8)  # integer values 0..16
        x_tr, x_te, y_tr, y_te = train_test_split(images, bunch.target, test_size=self.test_fraction,
                                                  stratify=bunch.target, random_state=data_seed)
        return _images(x_tr, y_tr, x_te, y_te, scale=16.0)


_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


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


@register
class MNIST(DatasetKind):
    """LeCun's four IDX files (``train-images-idx3-ubyte`` …), gzipped or not."""
    name = "mnist"
    train_count = 60000
    input_shape = (1, 28, 28)
    torchvision = "MNIST"
    stems = ("train-images", "train-labels", "t10k-images", "t10k-labels")

    def places(self, root: Path) -> list[Path]:
        return [root / "MNIST" / "raw", root / "mnist"]

    def present(self, root: Path) -> bool:
        return any(all(_idx_file(folder, stem) for stem in self.stems) for folder in self.places(root))

    def read(self, root: Path) -> Raw | None:
        for folder in self.places(root):
            files = [_idx_file(folder, stem) for stem in self.stems]
            if all(files):
                x_tr, y_tr, x_te, y_te = (read_idx(f) for f in files)
                for x, y, f in ((x_tr, y_tr, files[0]), (x_te, y_te, files[2])):
                    if x.ndim != 3 or len(x) != len(y):
                        raise ValueError(f"{f}: expected N×H×W images matching {len(y)} labels, "
                                         f"got shape {x.shape}")
                return _images(x_tr[:, None], y_tr, x_te[:, None], y_te, scale=255.0)
        return None

    def by_hand(self, root: Path) -> str:
        files = ", ".join(f"{s}-idx{'3' if s.endswith('images') else '1'}-ubyte[.gz]" for s in self.stems)
        return f"put {files} under {self.places(root)[0]}"


@register
class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST: MNIST's format, other folders, and a Debian package."""
    name = "fashion_mnist"
    torchvision = "FashionMNIST"
    system = Path("/usr/share/datasets/fashion-mnist")
    hint = f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs {system})"

    def places(self, root: Path) -> list[Path]:
        return [root / "FashionMNIST" / "raw", root / "fashion-mnist", self.system]


#: MD5 of the official CIFAR-10 python batches, as torchvision lists them for
#: cifar-10-python.tar.gz. A batch is a pickle, and unpickling can run code: a file is
#: unpickled only when its digest is here or in `TRUSTED_MD5`, and then only with
#: `_BatchUnpickler`, which builds nothing but lists, dicts, strings and NumPy arrays.
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
#: Further digests trusted in this process: for tests, which write tiny batches of their own
#: and register them here. Nothing in a study file reaches it.
TRUSTED_MD5: set[str] = set()


class UntrustedFile(ValueError):
    """A data file that is not the official one is not read (it could run code)."""


class _BatchUnpickler(pickle.Unpickler):
    """Refuses every global but what a CIFAR batch needs to rebuild its NumPy arrays."""
    _allowed = {("numpy.core.multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
                ("numpy._core.multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
                ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                ("_codecs", "encode"): codecs.encode}

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds "
                                         "only arrays, lists and strings") from None


def _unpickle(path: Path) -> dict:
    """A CIFAR batch, read only when its MD5 is that of the official file (`CIFAR10_MD5`) or
    one of `TRUSTED_MD5`; the bytes checked are the bytes unpickled."""
    raw = path.read_bytes()
    digest = hashlib.md5(raw).hexdigest()
    official = CIFAR10_MD5.get(path.name)
    if digest != official and digest not in TRUSTED_MD5:
        raise UntrustedFile(
            f"{path}: MD5 {digest} is not that of the official CIFAR-10 file {path.name} "
            f"({official or 'no such file in cifar-10-python.tar.gz'}); it is not read, since "
            "unpickling an unknown file can run code. Replace it with the file from "
            "cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html)")
    try:
        entry = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as e:
        raise UntrustedFile(f"{path}: not a CIFAR-10 batch: {e}") from None
    if not isinstance(entry, dict):
        raise UntrustedFile(f"{path}: not a CIFAR-10 batch (a {type(entry).__name__}, not a dict)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}


@register
class CIFAR10(DatasetKind):
    """The python pickle batches of CIFAR-10 (``data_batch_1`` … ``data_batch_5``, ``test_batch``),
    each unpickled only when its MD5 is the official file's (`_unpickle`)."""
    name = "cifar10"
    train_count = 50000
    input_shape = (3, 32, 32)
    torchvision = "CIFAR10"

    def places(self, root: Path) -> list[Path]:
        return [root / "cifar-10-batches-py"]

    def present(self, root: Path) -> bool:
        return all((self.places(root)[0] / name).is_file() for name in CIFAR10_MD5)

    def read(self, root: Path) -> Raw | None:
        folder = self.places(root)[0]
        train_files = [folder / f"data_batch_{i}" for i in range(1, 6)]
        test_file = folder / "test_batch"
        if not self.present(root):
            return None

        def batches(files):
            entries = [_unpickle(f) for f in files]
            x = np.concatenate([_as_bytes(e["data"]).reshape(-1, 3, 32, 32) for e in entries])
            y = np.concatenate([np.asarray(e["labels"], dtype=np.int64) for e in entries])
            return x, y

        return _images(*batches(train_files), *batches([test_file]), scale=255.0)

    def by_hand(self, root: Path) -> str:
        return (f"unpack cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) "
                f"into {root} so that {self.places(root)[0]}/data_batch_1..5 and test_batch exist")


@register
class SVHN(DatasetKind):
    """The Street View House Numbers' .mat files (label 10 is the digit 0)."""
    name = "svhn"
    train_count = 73257
    input_shape = (3, 32, 32)

    def places(self, root: Path) -> list[Path]:
        return [root / "svhn", root]

    def present(self, root: Path) -> bool:
        return any((f / "train_32x32.mat").is_file() and (f / "test_32x32.mat").is_file()
                   for f in self.places(root))

    def read(self, root: Path) -> Raw | None:
        for folder in self.places(root):
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

    def fetch(self, root: Path) -> None:
        from torchvision import datasets
        for split in ("train", "test"):
            datasets.SVHN(str(root / "svhn"), split=split, download=True)

    def by_hand(self, root: Path) -> str:
        return (f"put train_32x32.mat and test_32x32.mat (http://ufldl.stanford.edu/housenumbers/) "
                f"under {self.places(root)[0]}")


@register
class XOR(DatasetKind):
    """Points ``x`` of dimension ``dim`` (default 2) labelled 1 where ``x1·x2 > 0``, else 0: the
    XOR task of Wen et al. 2023. Uniform in ``[-1, 1]^dim``, or with ``boolean`` uniform on the
    cube ``{-1, 1}^dim`` (their setting: with far fewer training points than 2^dim a network
    can memorise instead of finding the rule; the coordinates past the first two are noise).
    ``test_size`` (default 1000) test points, 1000 (or ``train_size``) training points, drawn
    independently (on the cube a test point may equal a training point)."""
    name = "xor"
    num_classes = 2
    input_shape = (2,)
    train_default, test_default = 1000, 1000
    takes = ("dim", "boolean", "test_size")

    def shape(self, o: DataOptions) -> tuple[int, ...]:
        return (o.dim,)

    def raw(self, train_size: int | None, data_seed: int, dim: int, boolean: bool,
            test_size: int | None) -> Raw:
        def points(n, tag):
            rng = _rng(data_seed, tag)
            x = (rng.integers(0, 2, size=(n, dim)) * 2 - 1.0 if boolean
                 else rng.uniform(-1.0, 1.0, size=(n, dim)))
            y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
            return torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)

        x_test, y_test = points(test_size or self.test_default, _TAG_XOR_TEST)
        x_train, y_train = points(train_size or self.train_default, _TAG_XOR_TRAIN)
        return x_train, y_train, x_test, y_test
