"""Model-family adapters: where the decoder layers live and how hidden states become logits.

Each entry knows its decoder stack (`base(model)`, a module with `.layers`) and its head
(final norm, optional projection, lm_head). Everything else (embeddings, rotary tables, masks) is run
by the model's own forward up to the first layer, so new families need only these two functions.
"""
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Family:
    base: Callable      # model -> module holding .layers (and the embeddings)
    head: Callable      # (model, hidden) -> logits
    head_modules: Callable  # model -> modules the head uses (moved to the device for evaluation)


def _opt_head_modules(model):
    dec = model.model.decoder
    return [m for m in (dec.final_layer_norm, dec.project_out, model.lm_head) if m is not None]


def _opt_head(model, hidden):
    for module in _opt_head_modules(model):
        hidden = module(hidden)
    return hidden


def _llama_head_modules(model):
    return [model.model.norm, model.lm_head]


def _llama_head(model, hidden):
    return model.lm_head(model.model.norm(hidden))


FAMILIES = {
    "opt": Family(lambda m: m.model.decoder, _opt_head, _opt_head_modules),
    "llama": Family(lambda m: m.model, _llama_head, _llama_head_modules),
}
# config.model_type -> family (Llama-architecture models share the adapter)
MODEL_TYPES = {"opt": "opt", "llama": "llama", "mistral": "llama", "qwen2": "llama"}


def family_of(model, choice="auto", hint=""):
    """The adapter for `choice`, or (auto) for the model's config.model_type; one UsageError line (plus `hint`)
    for a type no adapter covers."""
    from utils.cli import UsageError
    if choice != "auto":
        return FAMILIES[choice]
    kind = MODEL_TYPES.get(model.config.model_type)
    if kind is None:
        raise UsageError(f"model type {model.config.model_type!r} is not supported{hint}")
    return FAMILIES[kind]


def load_causal_lm(path):
    """(model in float32, eval mode, no KV cache; tokenizer) from a hub id or a directory, as opt.py, llama.py
    and quant.qlinear read them; a path transformers cannot load ends with one UsageError line."""
    import torch

    import utils.tv_compat  # noqa: F401  (before transformers, which imports torchvision)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    from utils.cli import UsageError
    logging.disable_progress_bar()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"cannot load model {path!r}: {first}") from None
    model.config.use_cache = False  # layer-by-layer calibration and training need no cache
    return model.eval(), tokenizer
