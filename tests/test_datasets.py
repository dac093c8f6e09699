"""utils/datasets.py: the registry, the on-disk layouts (fake copies made here) and the error messages."""
import pytest

from tests import fake_data
from utils.cli import UsageError
from utils.datasets import DATASETS, build_datasets, targets_of


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
