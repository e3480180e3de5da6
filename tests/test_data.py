"""Tests of study.data: splits, options, native file formats, and the errors.

Expected values are computed independently with NumPy from the raw data the
test itself writes (or from scikit-learn's bundled digits), never from the
loader's own output.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest
import scipy.io
import torch
from sklearn.datasets import load_digits

from study import data
from study.data import DATASETS, Dataset, DatasetUnavailable, load_dataset, read_idx

# ----------------------------------------------------------------------------- helpers

def standardised(train_raw: np.ndarray, test_raw: np.ndarray, scale: float):
    """Independent reference: (N, C, H, W) raw values → scaled, per-channel standardised
    with the training set's mean and population std (float64)."""
    tr, te = train_raw.astype(np.float64) / scale, test_raw.astype(np.float64) / scale
    mean = tr.mean(axis=(0, 2, 3), keepdims=True)
    std = tr.std(axis=(0, 2, 3), keepdims=True)
    return (tr - mean) / std, (te - mean) / std


def rows(x: torch.Tensor, y: torch.Tensor) -> list[tuple]:
    """Sorted list of (label, rounded pixels) pairs: a multiset to compare sets of examples."""
    flat = np.round(x.reshape(len(x), -1).numpy().astype(np.float64), 4)
    return sorted((int(label), tuple(r)) for label, r in zip(y.numpy(), flat))


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    """Write an unsigned-byte IDX file (LeCun's format) by hand."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def write_idx_set(folder, rng, n_train=12, n_test=5, size=28, gz_train=False, gz_test=True):
    raw = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size)),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3) % 10,
    }
    for name, arr in raw.items():
        write_idx(folder / name, arr, gz_test if name.startswith("t10k") else gz_train)
    return raw


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


# ----------------------------------------------------------------------------- digits

def test_digits_shapes_types(digits):
    assert list(DATASETS) == ["digits", "mnist", "fashion_mnist", "cifar10", "svhn", "xor"]
    assert digits.name == "digits" and digits.num_classes == 10
    assert digits.x_train.shape == (1437, 1, 8, 8) and digits.x_test.shape == (360, 1, 8, 8)
    assert digits.y_train.shape == (1437,) and digits.y_test.shape == (360,)
    assert digits.input_shape == (1, 8, 8)
    for t, dtype in ((digits.x_train, torch.float32), (digits.x_test, torch.float32),
                     (digits.y_train, torch.int64), (digits.y_test, torch.int64)):
        assert t.dtype == dtype and t.device.type == "cpu" and t.is_contiguous()


def test_digits_split_is_a_stratified_partition_standardised_with_train_stats(digits):
    bunch = load_digits()
    # Stratified: each class's share of the training split is 80 % of it, to within one image.
    counts = np.bincount(bunch.target, minlength=10)
    train_counts = np.bincount(digits.y_train.numpy(), minlength=10)
    assert np.all(np.abs(train_counts - 0.8 * counts) <= 1)
    # Standardised with training statistics: pixel values are (v/16 − m)/s, v ∈ 0..16, so
    # the training split's distinct values lie on a grid; recover m, s from it.
    values = np.unique(digits.x_train.numpy().astype(np.float64))
    step = np.min(np.diff(values))  # = 1/(16 s)
    s = 1.0 / (16.0 * step)
    m = -values[0] * s  # value 0 is present in the training images
    raw_train = (digits.x_train.numpy().astype(np.float64) * s + m) * 16
    raw_test = (digits.x_test.numpy().astype(np.float64) * s + m) * 16
    np.testing.assert_allclose(raw_train, np.round(raw_train), atol=1e-3)
    np.testing.assert_allclose(raw_test, np.round(raw_test), atol=1e-3)
    assert np.isclose(m, (np.round(raw_train) / 16).mean(), rtol=1e-5)
    assert np.isclose(s, (np.round(raw_train) / 16).std(), rtol=1e-5)
    # Train ∪ test is exactly the bundled data set, images with their labels.
    got = rows(torch.from_numpy(np.round(np.concatenate([raw_train, raw_test]))),
               torch.cat([digits.y_train, digits.y_test]))
    want = rows(torch.from_numpy(bunch.images.reshape(-1, 1, 8, 8)), torch.from_numpy(bunch.target))
    assert got == want


def test_digits_deterministic_and_seeded(digits):
    again = load_dataset("digits")
    assert again is not digits
    assert torch.equal(again.x_train, digits.x_train) and torch.equal(again.y_train, digits.y_train)
    other = load_dataset("digits", data_seed=1)
    assert other.x_train.shape == digits.x_train.shape
    assert not torch.equal(other.y_train, digits.y_train)


# ----------------------------------------------------------------------------- options

def test_label_noise_fraction_and_determinism(digits):
    noisy = load_dataset("digits", label_noise=0.5, data_seed=0)
    changed = (noisy.y_train != digits.y_train).float().mean().item()
    # Expected p(1 − 1/C) = 0.45; binomial sd over 1437 labels ≈ 0.013, allow 5 sd.
    assert abs(changed - 0.45) < 0.066
    assert torch.equal(load_dataset("digits", label_noise=0.5, data_seed=0).y_train, noisy.y_train)
    assert not torch.equal(load_dataset("digits", label_noise=0.5, data_seed=3).y_train,
                           load_dataset("digits", data_seed=3).y_train)
    # Images and test labels untouched, and the cached clean labels not mutated.
    assert torch.equal(noisy.x_train, digits.x_train) and torch.equal(noisy.y_test, digits.y_test)
    assert torch.equal(load_dataset("digits").y_train, digits.y_train)
    assert torch.equal(load_dataset("digits", label_noise=0.0).y_train, digits.y_train)
    assert noisy.y_train.dtype == torch.int64


def test_label_noise_one_gives_uniform_random_labels():
    # XOR with many points gives a tight check: C = 2, expected changed fraction p/2.
    clean = load_dataset("xor", train_size=20000)
    noisy = load_dataset("xor", train_size=20000, label_noise=0.3)
    changed = (noisy.y_train != clean.y_train).float().mean().item()
    assert abs(changed - 0.15) < 5 * np.sqrt(0.15 * 0.85 / 20000)
    # p = 1 on digits: labels independent of the images, uniform over the 10 classes.
    full = load_dataset("digits", label_noise=1.0)
    counts = np.bincount(full.y_train.numpy(), minlength=10)
    expected = 1437 / 10
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    changed = (full.y_train != load_dataset("digits").y_train).float().mean().item()
    assert abs(changed - 0.9) < 5 * np.sqrt(0.09 / 1437)


def test_train_size_is_a_stratified_seeded_subset(digits):
    sub = load_dataset("digits", train_size=100)
    assert sub.x_train.shape == (100, 1, 8, 8) and sub.y_train.shape == (100,)
    full_counts = np.bincount(digits.y_train.numpy(), minlength=10)
    sub_counts = np.bincount(sub.y_train.numpy(), minlength=10)
    assert np.all(np.abs(sub_counts - 100 * full_counts / 1437) < 1)
    # Every chosen example (image with its label) is a distinct example of the full training set.
    full_rows = rows(digits.x_train, digits.y_train)
    sub_rows = rows(sub.x_train, sub.y_train)
    remaining = list(full_rows)
    for r in sub_rows:
        remaining.remove(r)  # raises if absent or used twice
    # Test set unchanged, determinism, and seed dependence.
    assert torch.equal(sub.x_test, digits.x_test) and torch.equal(sub.y_test, digits.y_test)
    assert torch.equal(load_dataset("digits", train_size=100).x_train, sub.x_train)
    a = load_dataset("digits", train_size=100, data_seed=5)
    b = load_dataset("digits", train_size=100, data_seed=5, label_noise=0.0)
    assert torch.equal(a.x_train, b.x_train)
    c = load_dataset("digits", train_size=100, data_seed=6)
    assert rows(a.x_train, a.y_train) != rows(c.x_train, c.y_train)
    # Sizes at the edges: fewer than the classes, and all of them.
    assert load_dataset("digits", train_size=7).x_train.shape[0] == 7
    assert torch.equal(load_dataset("digits", train_size=1437).y_train, digits.y_train)


def test_stratified_subset_counts_against_proportions():
    rng = np.random.default_rng(0)
    labels = rng.choice(5, size=333, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    for size in (1, 4, 50, 200, 333):
        idx = data.stratified_subset(labels, size, np.random.default_rng(1))
        assert len(idx) == size == len(np.unique(idx))
        got = np.bincount(labels[idx], minlength=5)
        want = size * np.bincount(labels, minlength=5) / len(labels)
        assert np.all(np.abs(got - want) < 1)


# ----------------------------------------------------------------------------- xor

def test_xor_labels_sizes_and_seeding():
    d = load_dataset("xor")
    assert d.x_train.shape == (1000, 2) and d.x_test.shape == (1000, 2) and d.num_classes == 2
    assert d.input_shape == (2,) and d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        xn = x.numpy()
        assert np.all(np.abs(xn) <= 1)
        np.testing.assert_array_equal(y.numpy(), (np.sign(xn[:, 0]) * np.sign(xn[:, 1]) > 0))
        assert 0.4 < y.float().mean().item() < 0.6  # both classes, roughly balanced
    small = load_dataset("xor", train_size=64)
    assert small.x_train.shape == (64, 2)
    assert torch.equal(small.x_test, d.x_test)  # the test set does not depend on train_size
    assert torch.equal(load_dataset("xor").x_train, d.x_train)
    assert not torch.equal(load_dataset("xor", data_seed=1).x_train, d.x_train)


# ----------------------------------------------------------------------------- native files

@pytest.fixture
def trust_written(monkeypatch):
    """Trust the MD5 of files this test wrote itself (study.data reads only the official CIFAR
    batches): call it with the paths, after writing them."""
    trusted = set(data.TRUSTED_MD5)
    monkeypatch.setattr(data, "TRUSTED_MD5", trusted)

    def trust(*paths):
        trusted.update(hashlib.md5(p.read_bytes()).hexdigest() for p in paths)
    yield trust
    data.clear_cache()


def test_tiny_cifar10_pickles(tmp_path, trust_written):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_x, train_y = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        y = [(2 * i) % 10, (2 * i + 1) % 10]
        train_x.append(x)
        train_y += y
        with open(folder / f"data_batch_{i}", "wb") as fh:
            pickle.dump({"batch_label": f"training batch {i} of 5", "labels": y, "data": x,
                         "filenames": [f"img{i}_{j}.png" for j in range(2)]}, fh, protocol=2)
    test_x = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    test_y = [7, 0, 3]
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({"batch_label": "testing batch 1 of 1", "labels": test_y, "data": test_x,
                     "filenames": ["a", "b", "c"]}, fh, protocol=2)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                     "horse", "ship", "truck"], "num_cases_per_batch": 2,
                     "num_vis": 3072}, fh, protocol=2)

    with pytest.raises(data.UntrustedFile, match="data_batch_1: MD5 .* not that of the official"):
        load_dataset("cifar10", root=str(tmp_path), download=False)
    trust_written(*folder.iterdir())
    d = load_dataset("cifar10", root=str(tmp_path), download=False)
    assert d.x_train.shape == (10, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32)
    assert d.y_train.tolist() == train_y and d.y_test.tolist() == test_y
    raw_train = np.concatenate(train_x)
    # CIFAR layout: 1024 red, then green, then blue values, each a row-major 32×32 image.
    want_tr, want_te = standardised(raw_train.reshape(-1, 3, 32, 32), test_x.reshape(-1, 3, 32, 32), 255.0)
    np.testing.assert_allclose(d.x_train.numpy(), want_tr, atol=1e-5)
    np.testing.assert_allclose(d.x_test.numpy(), want_te, atol=1e-5)
    # One pixel by hand: image 3 (batch 2, row 1), green channel, row 5, column 17.
    v = raw_train[3, 1024 + 5 * 32 + 17] / 255.0
    g = raw_train[:, 1024:2048] / 255.0
    assert d.x_train[3, 1, 5, 17].item() == pytest.approx((v - g.mean()) / g.std(), abs=1e-5)
    # Options on file-backed data, and a train_size above what the files hold.
    assert load_dataset("cifar10", root=str(tmp_path), download=False, train_size=5).x_train.shape[0] == 5
    with pytest.raises(ValueError, match="above the 10 training examples"):
        load_dataset("cifar10", root=str(tmp_path), download=False, train_size=11)


class _Payload:
    """Unpickled, it creates the file ``target`` (as a hostile CIFAR batch would run code)."""
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def _write_hostile_cifar(root, target):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": _Payload(target), "labels": [0]}, protocol=2))
    return folder


def test_crafted_cifar_pickle_is_never_unpickled(tmp_path):
    target = tmp_path / "pwned"
    folder = _write_hostile_cifar(tmp_path / "data", target)
    with pytest.raises(data.UntrustedFile) as e:
        load_dataset("cifar10", root=str(tmp_path / "data"), download=False)
    assert not target.exists()
    msg = str(e.value)
    assert str(folder / "data_batch_1") in msg and "MD5" in msg and "official" in msg
    assert data.CIFAR10_MD5["data_batch_1"] in msg  # the digest it should have


def test_trusted_digest_still_builds_only_arrays(tmp_path, trust_written):
    """Even a file whose digest is trusted is read by an unpickler that refuses any code."""
    target = tmp_path / "pwned"
    folder = _write_hostile_cifar(tmp_path / "data", target)
    trust_written(*folder.iterdir())
    with pytest.raises(data.UntrustedFile, match="data_batch_1: not a CIFAR-10 batch: refusing to load "
                                                 r"(builtins|io)\.open"):
        load_dataset("cifar10", root=str(tmp_path / "data"), download=False)
    assert not target.exists()


def test_official_cifar_digests_are_torchvisions():
    from torchvision.datasets import CIFAR10
    assert data.CIFAR10_MD5 == dict(CIFAR10.train_list + CIFAR10.test_list)


def test_tiny_svhn_mat_files(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "svhn"
    folder.mkdir()
    x_tr = rng.integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)  # SVHN: (H, W, C, N)
    y_tr = np.array([[1], [10], [5], [10], [9], [2]], dtype=np.uint8)
    x_te = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    y_te = np.array([[10], [3], [4], [1]], dtype=np.uint8)
    scipy.io.savemat(folder / "train_32x32.mat", {"X": x_tr, "y": y_tr})
    scipy.io.savemat(folder / "test_32x32.mat", {"X": x_te, "y": y_te})

    d = load_dataset("svhn", root=str(tmp_path), download=False)
    assert d.x_train.shape == (6, 3, 32, 32) and d.x_test.shape == (4, 3, 32, 32)
    assert d.y_train.tolist() == [1, 0, 5, 0, 9, 2] and d.y_test.tolist() == [0, 3, 4, 1]
    want_tr, want_te = standardised(x_tr.transpose(3, 2, 0, 1), x_te.transpose(3, 2, 0, 1), 255.0)
    np.testing.assert_allclose(d.x_train.numpy(), want_tr, atol=1e-5)
    np.testing.assert_allclose(d.x_test.numpy(), want_te, atol=1e-5)
    # One pixel by hand: image 4, blue channel, row 30, column 2 is X[30, 2, 2, 4].
    b = x_tr[:, :, 2, :] / 255.0
    assert d.x_train[4, 2, 30, 2].item() == pytest.approx((x_tr[30, 2, 2, 4] / 255.0 - b.mean()) / b.std(),
                                                          abs=1e-5)


@pytest.mark.parametrize("name, sub", [("mnist", "MNIST/raw"), ("fashion_mnist", "fashion-mnist")])
def test_tiny_idx_files(tmp_path, name, sub):
    raw = write_idx_set(tmp_path / sub, np.random.default_rng(2))
    d = load_dataset(name, root=str(tmp_path), download=False)
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
    assert d.y_train.tolist() == raw["train-labels-idx1-ubyte"].tolist()
    assert d.y_test.tolist() == raw["t10k-labels-idx1-ubyte"].tolist()
    want_tr, want_te = standardised(raw["train-images-idx3-ubyte"][:, None],
                                    raw["t10k-images-idx3-ubyte"][:, None], 255.0)
    np.testing.assert_allclose(d.x_train.numpy(), want_tr, atol=1e-5)
    np.testing.assert_allclose(d.x_test.numpy(), want_te, atol=1e-5)


def test_read_idx_rejects_corrupt_files(tmp_path):
    arr = np.arange(24).reshape(2, 3, 4)
    write_idx(tmp_path / "ok", arr, compress=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "ok.gz"), arr)
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x01\x02")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "png")


@pytest.mark.skipif(not data.FashionMNIST.system.is_dir(),
                    reason="Debian package dataset-fashion-mnist not installed "
                           "(apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_package(tmp_path):
    try:
        d = load_dataset("fashion_mnist", root=str(tmp_path), download=False)
        assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
        # Fashion-MNIST is balanced: 6000 training and 1000 test images per class.
        assert np.bincount(d.y_train.numpy()).tolist() == [6000] * 10
        assert np.bincount(d.y_test.numpy()).tolist() == [1000] * 10
        # Independent parse with the fixed 16-byte (images) and 8-byte (labels) headers.
        def parse(stem, offset):
            path = data.FashionMNIST.system / f"{stem}.gz"
            return np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=offset)

        labels = parse("t10k-labels-idx1-ubyte", 8)
        assert d.y_test.tolist() == labels.tolist()
        hist = np.bincount(parse("train-images-idx3-ubyte", 16), minlength=256)  # exact moments
        v = np.arange(256) / 255.0
        mean = (hist * v).sum() / hist.sum()
        std = np.sqrt((hist * (v - mean) ** 2).sum() / hist.sum())
        first = parse("t10k-images-idx3-ubyte", 16)[:784].reshape(28, 28) / 255.0
        np.testing.assert_allclose(d.x_test[0, 0].numpy(), (first - mean) / std, atol=1e-4)
    finally:
        data.clear_cache()  # 60000 images: do not keep them for the rest of the test session


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("name", ["cifar10", "svhn", "mnist", "fashion_mnist"])
def test_absent_dataset_without_download(tmp_path, monkeypatch, name):
    monkeypatch.setattr(data.FashionMNIST, "system", tmp_path / "no-system-copy")
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset(name, root=str(tmp_path), download=False)
    msg = str(info.value)
    assert name in msg and str(tmp_path) in msg and "download=True" in msg and "STUDY_DATA" in msg
    if name == "fashion_mnist":
        assert "apt-get install dataset-fashion-mnist" in msg


def test_root_from_environment(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "mnist", np.random.default_rng(3), n_train=4, n_test=2)
    monkeypatch.setenv("STUDY_DATA", str(tmp_path))
    assert data.data_root() == tmp_path
    assert load_dataset("mnist", download=False).x_train.shape == (4, 1, 28, 28)


def test_failed_download_says_how_to_get_it(tmp_path, monkeypatch):
    def offline(self, root):
        raise OSError("Name or service not known")

    monkeypatch.setattr(data.CIFAR10, "fetch", offline)
    with pytest.raises(DatasetUnavailable, match="download failed.*Name or service not known"):
        load_dataset("cifar10", root=str(tmp_path), download=True)


def test_download_is_used_when_absent(tmp_path, monkeypatch):
    calls = []

    def fake_fetch(self, root):  # stands in for torchvision: leaves the files where it would
        calls.append(self.name)
        write_idx_set(root / "MNIST" / "raw", np.random.default_rng(4), n_train=3, n_test=2)

    monkeypatch.setattr(data.MNIST, "fetch", fake_fetch)
    d = load_dataset("mnist", root=str(tmp_path), download=True)
    assert calls == ["mnist"] and d.x_train.shape == (3, 1, 28, 28)
    load_dataset("mnist", root=str(tmp_path), download=True)
    assert calls == ["mnist"]  # memoised: no second fetch or read


@pytest.mark.parametrize("name, train_size, noise, pattern", [
    ("imagenet", None, 0.0, "unknown dataset 'imagenet'; datasets: digits, mnist, fashion_mnist, "
                            "cifar10, svhn, xor"),
    ("digits", 0, 0.0, "train_size = 0 must be an integer ≥ 1"),
    ("digits", -5, 0.0, "train_size = -5 must be an integer ≥ 1"),
    ("digits", 1.5, 0.0, "train_size = 1.5 must be an integer ≥ 1"),
    ("digits", True, 0.0, "train_size = True must be an integer ≥ 1"),
    ("digits", 1438, 0.0, "above the 1437 training examples of digits"),
    ("cifar10", 50001, 0.0, "above the 50000"),
    ("digits", None, -0.1, r"label_noise = -0.1 must be a number in \[0, 1\]"),
    ("digits", None, 1.5, r"label_noise = 1.5 must be a number in \[0, 1\]"),
    ("digits", None, float("nan"), r"label_noise = nan must be a number in \[0, 1\]"),
    ("digits", None, "0.1", r"label_noise = '0.1' must be a number in \[0, 1\]"),
])
def test_bad_options(name, train_size, noise, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_dataset(name, train_size=train_size, label_noise=noise, download=False)


def test_good_options_pass():
    for name, train_size in (("digits", 1437), ("xor", 10**6), ("svhn", None)):
        data.dataset_kind(name).check(train_size)
    with pytest.raises(ValueError, match="data_seed = -1 must be an integer ≥ 0"):
        load_dataset("digits", data_seed=-1)


# ----------------------------------------------------------------------------- options of PR 19/20


def test_xor_in_dimension_d_on_the_boolean_cube():
    d = load_dataset("xor", dim=20, boolean=True, train_size=300, test_size=5000)
    assert d.x_train.shape == (300, 20) and d.x_test.shape == (5000, 20) and d.input_shape == (20,)
    for x, y in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        xn = x.numpy()
        assert set(np.unique(xn)) == {-1.0, 1.0}
        np.testing.assert_array_equal(y.numpy(), xn[:, 0] * xn[:, 1] > 0)
        assert 0.45 < xn.mean() + 0.5 < 0.55 and 0.4 < y.float().mean().item() < 0.6
    # each coordinate a fair, independent sign: no coordinate predicts another
    c = np.corrcoef(d.x_test.numpy().T)
    assert np.abs(c - np.eye(20)).max() < 0.1
    again = load_dataset("xor", dim=20, boolean=True, train_size=300, test_size=5000)
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.x_test, d.x_test)
    cont = load_dataset("xor", dim=5)
    assert cont.x_train.shape == (1000, 5) and np.abs(cont.x_train.numpy()).max() <= 1
    assert len(np.unique(cont.x_train.numpy())) > 4000


def test_xor_of_dimension_two_is_the_square_of_before():
    """dim = 2 (the default) draws exactly what the 2-D XOR always drew: uniform(−1, 1) pairs
    from the seeded stream of each split (so stored runs keep their data and ids)."""
    d = load_dataset("xor", dim=2)
    x = np.random.default_rng([0, 3]).uniform(-1.0, 1.0, size=(1000, 2)).astype(np.float32)
    np.testing.assert_array_equal(d.x_train.numpy(), x)
    xt = np.random.default_rng([0, 4]).uniform(-1.0, 1.0, size=(1000, 2)).astype(np.float32)
    np.testing.assert_array_equal(d.x_test.numpy(), xt)


def test_binary_relabels_the_lower_half_of_the_classes_as_0(digits):
    b = load_dataset("digits", binary=True)
    assert b.num_classes == 2
    np.testing.assert_array_equal(b.y_train.numpy(), digits.y_train.numpy() >= 5)
    np.testing.assert_array_equal(b.y_test.numpy(), digits.y_test.numpy() >= 5)
    assert torch.equal(b.x_train, digits.x_train)
    sub = load_dataset("digits", binary=True, train_size=300)
    full_sub = load_dataset("digits", train_size=300)   # the same stratified subset, then relabelled
    np.testing.assert_array_equal(sub.y_train.numpy(), full_sub.y_train.numpy() >= 5)
    noisy = load_dataset("digits", binary=True, label_noise=1.0)
    assert set(noisy.y_train.unique().tolist()) == {0, 1}   # redrawn among the 2 classes
    assert 0.4 < (noisy.y_train != b.y_train).float().mean().item() < 0.6


@pytest.mark.parametrize("name, options, pattern", [
    ("digits", {"dim": 20}, "dim is an option of xor, not of digits"),
    ("digits", {"test_size": 20}, "test_size is an option of xor, not of digits"),
    ("xor", {"binary": True}, "binary is an option of .*digits.*, not of xor"),
    ("xor", {"dim": 1}, "dim = 1 must be an integer"),
])
def test_options_a_dataset_does_not_take(name, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_dataset(name, **options)
