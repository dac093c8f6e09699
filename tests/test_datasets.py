"""utils/datasets.py: the registry, the on-disk layouts (fake copies made here) and the error messages."""
import os

import numpy as np
import pytest

from tests import fake_data
from utils.cli import UsageError
from utils.datasets import (CIFAR10_CLASSES, CIFAR10_JPEG_TAR, DATASETS, build_datasets, cifar10_data_dir,
                            decode_jpeg_tar, jpeg_tar_images, targets_of, unpack_jpeg_tar)


def test_registry_entries_know_classes_norm_and_size():
    for name, entry in DATASETS.items():
        assert entry.num_classes > 1 and len(entry.mean) == 3 and len(entry.std) == 3, name
        assert entry.image_size > 0 and entry.crop in ("pad", "resized", "none"), name


def test_fake_cifar10_pickles_load_with_right_labels(tmp_path):
    fake_data.make_cifar10(tmp_path, per_batch=4, n_test=6)
    train, test, info = build_datasets("CIFAR10", str(tmp_path), 32, augment=False)
    assert info["num_classes"] == 10 and info["n_train"] == 20 and info["n_test"] == 6
    assert targets_of(train) == [(b + i) % 10 for b in range(1, 6) for i in range(4)]
    assert [test[i][1] for i in range(6)] == [0, 1, 2, 3, 4, 5]
    x, y = train[3]
    assert x.shape == (3, 32, 32) and y == train.base.targets[3]
    assert info["classes"][0] == "class0"


def test_fake_cifar100_pickles_load_fine_labels(tmp_path):
    fake_data.make_cifar100(tmp_path, n_train=30, n_test=10)
    train, test, info = build_datasets("cifar100", str(tmp_path), 32, augment=True)
    assert info["num_classes"] == 100
    assert targets_of(train) == [(7 * i) % 100 for i in range(30)]
    assert train[5][1] == 35 and train[5][0].shape == (3, 32, 32)


def test_fake_tiny_imagenet_layout(tmp_path):
    fake_data.make_tiny_imagenet(tmp_path, wnids=("n02", "n01", "n03"), per_class=2)
    train, test, info = build_datasets("tiny-imagenet", str(tmp_path), 64, augment=False)
    assert info["num_classes"] == 200 and info["n_train"] == 6 and info["n_test"] == 3
    assert targets_of(train) == [0, 0, 1, 1, 2, 2]  # classes sorted: n01, n02, n03
    assert targets_of(test) == [2, 0, 1]  # val_annotations lists n03, n01, n02
    x, _ = train[2]  # class n02 was filled with value 10
    assert x.shape == (3, 64, 64)
    assert abs(x[0, 32, 32].item() - (10 / 255 - 0.485) / 0.229) < 0.05  # centre pixel (random crop pads)


def test_class_folder_layout_and_subset(tmp_path):
    fake_data.make_class_folders(tmp_path / "cifar10-jpeg", per_class=5)
    train, test, info = build_datasets("cifar10", str(tmp_path), 16, augment=True, subset=4, test_subset=3)
    assert info["n_train"] == 4 and info["n_test"] == 3
    assert train[0][0].shape == (3, 16, 16)
    again, _, _ = build_datasets("cifar10", str(tmp_path), 16, augment=True, subset=4, test_subset=3)
    assert targets_of(again) == targets_of(train) and train.base.indices == again.base.indices


def test_embedded_digits_need_no_files(tmp_path):
    train, test, info = build_datasets("digits", str(tmp_path / "nothing"), 32, augment=False)
    assert info["n_train"] + info["n_test"] == 1797 and train[0][0].shape == (3, 32, 32)
    assert sorted(set(targets_of(test))) == list(range(10))


@pytest.mark.parametrize("name,needle", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"),
                                         ("tiny-imagenet", "val_annotations.txt"), ("food-101", "food-101"),
                                         ("imagenet", "train,val")])
def test_missing_data_names_the_layout(tmp_path, name, needle):
    with pytest.raises(UsageError, match="expected --data-dir") as err:
        build_datasets(name, str(tmp_path), 32, augment=False)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match="cifar10"):
        build_datasets("mnist", ".", 32, augment=False)


def test_packed_jpeg_copy_decodes_in_class_then_file_order(tmp_path):
    tar = fake_data.make_jpeg_tar(tmp_path / "c.tar.gz", classes=("truck", "airplane"), per_class=2)
    out = decode_jpeg_tar(tar)
    images, labels = out["train"]
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8 and list(labels) == [0, 0, 9, 9]
    # airplane (label 0) was the 2nd class of the tar (fill 40 + 5 i), files 0000 then 0001
    assert [int(round(images[j].mean())) for j in range(4)] == pytest.approx([40, 45, 0, 5], abs=2)
    assert out["test"][0].shape == (4, 32, 32, 3) and abs(out["test"][0][2].mean() - 20) < 2


def test_unpacked_copy_is_the_decoded_one_as_the_cifar10_entry_reads_it(tmp_path):
    """cifar10_data_dir unpacks a --data-dir that holds only the tar, once; the registry then reads the same
    images in the same order as decode_jpeg_tar (with or without the tar's top folder)."""
    for prefix in ("cifar10-jpeg", ""):
        data = tmp_path / f"data{prefix}"
        os.makedirs(data / "cifar10-jpeg")
        fake_data.make_jpeg_tar(data / CIFAR10_JPEG_TAR, classes=("truck", "cat", "airplane"), prefix=prefix)
        root = cifar10_data_dir(str(data), str(tmp_path / f"cache{prefix}"))
        assert root == str(tmp_path / f"cache{prefix}" / "cifar10-jpeg")
        assert sorted(os.listdir(root)) == ["test", "train"] and not os.listdir(tmp_path / f"cache{prefix}")[1:]
        train, test, info = build_datasets("cifar10", root, 32, augment=False)
        decoded = decode_jpeg_tar(str(data / CIFAR10_JPEG_TAR))
        assert list(decoded["train"][1]) == [0, 0, 3, 3, 9, 9]
        # ImageFolder labels index the classes present, sorted; with all ten that is CIFAR-10's order
        assert [info["classes"][t] for t in targets_of(train)] == [CIFAR10_CLASSES[y] for y in decoded["train"][1]]
        pixels = np.stack([np.asarray(train.base[i][0]) for i in range(len(train.base))])
        assert np.array_equal(pixels, decoded["train"][0])
        assert cifar10_data_dir(str(data), str(tmp_path / f"cache{prefix}")) == root  # reused, not unpacked again


def test_data_dir_with_a_readable_layout_is_used_as_it_is(tmp_path):
    fake_data.make_class_folders(tmp_path / "cifar10-jpeg")
    fake_data.make_jpeg_tar(tmp_path / CIFAR10_JPEG_TAR)
    assert cifar10_data_dir(str(tmp_path), str(tmp_path / "cache")) == str(tmp_path)
    assert cifar10_data_dir(str(tmp_path / "none"), str(tmp_path / "cache")) == str(tmp_path / "none")
    assert not os.path.exists(tmp_path / "cache")


def test_finished_unpack_is_reused_and_an_interrupted_one_is_not(tmp_path):
    tar = fake_data.make_jpeg_tar(tmp_path / "c.tar.gz")
    target = tmp_path / "out"
    os.makedirs(target / "train")  # a folder without test/ is not a finished copy, and is not merged into
    with pytest.raises(OSError):
        unpack_jpeg_tar(tar, str(target))
    assert sorted(os.listdir(tmp_path)) == ["c.tar.gz", "out"] and os.listdir(target) == ["train"]
    os.rmdir(target / "train")
    os.rmdir(target)
    assert unpack_jpeg_tar(tar, str(target)) == str(target)
    assert sorted(os.listdir(target / "test")) == ["airplane", "truck"]
    os.remove(tar)
    assert unpack_jpeg_tar(tar, str(target)) == str(target)  # finished: the tar is not read again


@pytest.mark.parametrize("content, needle", [(None, "not found"), (b"not a tar", "not a readable tar.gz"),
                                             ("truncated", "not a readable tar.gz")])
def test_missing_or_corrupt_tar_is_one_usage_error_line(tmp_path, content, needle):
    path = tmp_path / "c.tar.gz"
    if content == "truncated":
        whole = open(fake_data.make_jpeg_tar(path), "rb").read()
        path.write_bytes(whole[:len(whole) // 2])
    elif content is not None:
        path.write_bytes(content)
    for reader in (decode_jpeg_tar, lambda p: unpack_jpeg_tar(p, str(tmp_path / "out"))):
        with pytest.raises(UsageError, match=needle) as err:
            reader(str(path))
        assert "\n" not in str(err.value)
    assert sorted(os.listdir(tmp_path)) == ["c.tar.gz"] if content is not None else not os.listdir(tmp_path)


def test_tar_without_test_images_or_with_unknown_classes_is_refused(tmp_path):
    only = fake_data.make_jpeg_tar(tmp_path / "a.tar.gz", classes=("cat", "unicorn"))
    with pytest.raises(UsageError, match="unicorn"):
        decode_jpeg_tar(only)
    assert {split for split, *_ in jpeg_tar_images(only)} == {"train", "test"}
    no_test = fake_data.make_jpeg_tar(tmp_path / "b.tar.gz", splits=("train",))
    for reader in (decode_jpeg_tar, lambda p: unpack_jpeg_tar(p, str(tmp_path / "out"))):
        with pytest.raises(UsageError, match="no test/"):
            reader(no_test)
    assert sorted(os.listdir(tmp_path)) == ["a.tar.gz", "b.tar.gz"]
