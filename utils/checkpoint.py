"""The one checkpoint format and its save/load helpers.

A checkpoint is a dict saved with torch.save (written atomically): 'model' (state dict, unwrapped from DDP),
'optimizer', 'scheduler', 'scaler', 'epoch' (epochs completed), 'best_acc', 'rng' (see rng_state), 'args'
(vars(args) of train.py: net, dataset, size, patch, dimhead, loss, k, m, data_dir, ...), and 'partial'
(None, or the progress inside an interrupted epoch). train.py writes <out>/checkpoint.pt every epoch and
<out>/best.pt whenever validation accuracy improves.
"""
import pickle
import random
import zipfile

import numpy as np
import torch

from utils.cli import UsageError
from utils.runio import atomic_torch_save

KEYS = ("model", "optimizer", "scheduler", "scaler", "epoch", "best_acc", "rng", "args")


def save_checkpoint(path, **state):
    """Write `state` (the keys above) atomically to `path`."""
    atomic_torch_save(state, path)
    return path


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint dict; UsageError (one line, exit 2) if the file is missing or not a checkpoint."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"checkpoint {path} not found") from None
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise UsageError(f"checkpoint {path} is corrupt or not a torch file ({type(err).__name__})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise UsageError(f"{path} is not a train.py checkpoint (no 'model' entry)")
    return state


def load_state_dict_file(path):
    """A bare state dict from a .safetensors / .pt / .pth file or from a train.py checkpoint."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            return load_file(path)
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot read weights {path}: {err}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"weights file {path} not found") from None
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise UsageError(f"weights file {path} is corrupt or not a torch file ({type(err).__name__})") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def rng_state():
    """Every RNG a training run draws from, in a form torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, (list, tuple)) else x
