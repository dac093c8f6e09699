"""The one checkpoint format and its save/load helpers, used by every script that saves a model.

A checkpoint is a dict saved with torch.save (written atomically) with two keys every checkpoint has:
- 'kind': which script wrote it and so how to rebuild the model ('train', 'gan', 'synthetic', 'pretrain_lm',
  'prune', ...);
- 'config': the settings that rebuild the model and identify the run (for train.py: net, dataset, size, patch,
  dimhead, loss, k, m, data_dir, ...);
and, by kind, the state: 'model' (state dict, unwrapped from DDP), 'optimizer', 'scheduler', 'scaler', 'epoch'
(epochs completed), 'step', 'best_acc', 'best_epoch', 'rng' (see rng_state), 'last_record' (the epoch's
metrics line), 'partial' (None, or the progress inside an interrupted epoch), 'rng_ranks' (under DDP, after a
mid-epoch stop: every process's RNG state, so each continues its own augmentation stream), or several named state dicts (a
GAN's 'G' and 'D'). train.py writes <out>/checkpoint.pt every epoch, then <out>/best.pt whenever validation
accuracy improves, then the metrics line.

Checkpoints written before 'kind' existed (train.py's, with an 'args' key) load as kind 'train' with
config = args.
"""
import pickle
import random
import zipfile

import numpy as np
import torch

from utils.cli import UsageError
from utils.runio import atomic_torch_save

def save_checkpoint(path, kind, config, **state):
    """Write {'kind', 'config', **state} atomically to `path`."""
    if not isinstance(kind, str) or not isinstance(config, dict):
        raise TypeError("save_checkpoint needs a kind (str) and a config (dict)")
    atomic_torch_save(dict(state, kind=kind, config=config), path)
    return path


def load_checkpoint(path, map_location="cpu", kind=None):
    """Load a checkpoint dict (with 'kind' and 'config'); UsageError (one line, exit 2) if the file is missing,
    not a checkpoint, or of another kind than `kind` (a str or a tuple of accepted kinds)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"checkpoint {path} not found") from None
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
        raise UsageError(f"checkpoint {path} is corrupt or not a torch file ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise UsageError(f"{path} is not a checkpoint of this project (not a dict)")
    if "kind" not in state:
        if "args" not in state or "model" not in state:
            raise UsageError(f"{path} is not a checkpoint of this project (no 'kind' entry)")
        state = dict(state, kind="train", config=state["args"])  # written before 'kind' existed
    accepted = (kind,) if isinstance(kind, str) else kind
    if accepted and state["kind"] not in accepted:
        raise UsageError(f"{path} is a '{state['kind']}' checkpoint; expected {' or '.join(accepted)}")
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
