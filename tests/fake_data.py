"""Tiny fake datasets in the official on-disk layouts, made in a temp dir by the tests."""
import io
import os
import pickle
import tarfile

import numpy as np
from PIL import Image


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def make_cifar10(root, per_batch=4, n_test=6):
    """cifar-10-batches-py/ with 5 train batches of `per_batch` images; label of image i of batch b = (b+i) % 10."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder, exist_ok=True)
    names = [f"class{c}" for c in range(10)]
    _dump(os.path.join(folder, "batches.meta"), {"label_names": names})
    for b in range(1, 6):
        _dump(os.path.join(folder, f"data_batch_{b}"),
              {"data": _images(per_batch, b), "labels": [(b + i) % 10 for i in range(per_batch)]})
    _dump(os.path.join(folder, "test_batch"), {"data": _images(n_test, 9), "labels": [i % 10 for i in range(n_test)]})
    return root


def make_cifar100(root, n_train=80, n_test=20):
    """cifar-100-python/ with train/test/meta; fine label of image i = (7 * i) % 100."""
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder, exist_ok=True)
    _dump(os.path.join(folder, "meta"), {"fine_label_names": [f"c{c}" for c in range(100)],
                                         "coarse_label_names": [f"s{c}" for c in range(20)]})
    for name, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        labels = [(7 * i) % 100 for i in range(n)]
        _dump(os.path.join(folder, name), {"data": _images(n, seed), "fine_labels": labels,
                                           "coarse_labels": [c // 5 for c in labels]})
    return root


def _jpeg(path, value, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def make_tiny_imagenet(root, wnids=("n02", "n01", "n03"), per_class=2, size=64):
    """tiny-imagenet-200/ with `wnids` classes: train images of class w are filled with value 10*index,
    val images listed in val_annotations.txt in reverse class order."""
    base = os.path.join(root, "tiny-imagenet-200")
    os.makedirs(os.path.join(base, "val", "images"), exist_ok=True)
    with open(os.path.join(base, "wnids.txt"), "w") as f:
        f.write("\n".join(wnids) + "\n")
    for w in wnids:
        for i in range(per_class):
            _jpeg(os.path.join(base, "train", w, "images", f"{w}_{i}.JPEG"), 10 * sorted(wnids).index(w), size)
    lines = []
    for j, w in enumerate(reversed(wnids)):
        name = f"val_{j}.JPEG"
        _jpeg(os.path.join(base, "val", "images", name), 0, size)
        lines.append(f"{name}\t{w}\t0\t0\t{size - 1}\t{size - 1}")
    with open(os.path.join(base, "val", "val_annotations.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root


def make_class_folders(root, classes=("cat", "dog"), per_class=3, size=32):
    for split in ("train", "test"):
        for c in classes:
            for i in range(per_class):
                _jpeg(os.path.join(root, split, c, f"{i}.jpg"), 100, size)
    return root


def make_jpeg_tar(path, classes=("truck", "airplane"), per_class=2, prefix="cifar10-jpeg", splits=("test", "train")):
    """A packed JPEG copy like ../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz: PREFIX/{test,train}/<class>/
    NNNN.jpg written in reverse file order (so readers must sort); image i of class c is filled with 40 c + 5 i
    (test images + 20), the class order being the one given."""
    with tarfile.open(path, "w:gz") as tar:
        for split in splits:
            offset = 20 if split == "test" else 0
            for c, name in enumerate(classes):
                for i in reversed(range(per_class)):
                    buf = io.BytesIO()
                    Image.fromarray(np.full((32, 32, 3), 40 * c + 5 * i + offset, np.uint8)).save(buf, format="JPEG")
                    info = tarfile.TarInfo("/".join(filter(None, (prefix, split, name, f"{i:04d}.jpg"))))
                    info.size = len(buf.getvalue())
                    tar.addfile(info, io.BytesIO(buf.getvalue()))
    return str(path)
