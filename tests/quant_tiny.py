"""Tiny data, tokenizer and models for the quantization tests (built in seconds, no downloads)."""
import json
import os
import random

import torch

WORDS = "one two three four five six seven eight nine ten".split()


def sentence(rng):
    """Counting from a random word: each next word is a fixed function of the previous one, which a
    tied-embedding model can only express through its layers."""
    start = rng.randrange(len(WORDS))
    return " ".join(WORDS[(start + k) % len(WORDS)] for k in range(rng.randint(6, 14))) + " ."


def write_data(root, seed=0):
    """The ../shared/data layouts, filled with counting sentences (a language a tiny model learns)."""
    rng = random.Random(seed)
    paras = [" ".join(sentence(rng) for _ in range(4)) for _ in range(240)]
    lines = []
    for p in paras:
        lines += [" \n", f" {p} \n"]
    os.makedirs(os.path.join(root, "wikitext-2"), exist_ok=True)
    os.makedirs(os.path.join(root, "wikitext-2-raw"), exist_ok=True)
    os.makedirs(os.path.join(root, "ptb"), exist_ok=True)
    os.makedirs(os.path.join(root, "c4"), exist_ok=True)
    with open(os.path.join(root, "wikitext-2/train.txt"), "w") as f:
        f.writelines(lines[:400])
    with open(os.path.join(root, "wikitext-2/test.txt"), "w") as f:
        f.writelines(lines[400:])
    with open(os.path.join(root, "wikitext-2-raw/wiki.test.raw"), "w") as f:
        f.writelines(line for line in lines[400:] if line.strip())
    for split in ("train", "test"):
        with open(os.path.join(root, f"ptb/ptb.{split}.txt"), "w") as f:
            f.writelines(f" {sentence(rng)} \n" for _ in range(150))
    with open(os.path.join(root, "c4/c4_validation_2k.jsonl"), "w") as f:
        for _ in range(1150):
            f.write(json.dumps({"text": " ".join(sentence(rng) for _ in range(3))}) + "\n")
    return root


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "</s>", "."] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                   eos_token="</s>", bos_token="</s>")


def make_model(family, vocab, seed=0, positions=64):
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM
    torch.manual_seed(seed)
    if family == "opt":
        cfg = OPTConfig(vocab_size=vocab, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=positions, word_embed_proj_dim=32,
                        dropout=0.0, attention_dropout=0.0, pad_token_id=0, bos_token_id=2, eos_token_id=2)
        return OPTForCausalLM(cfg)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=positions,
                      pad_token_id=0, bos_token_id=2, eos_token_id=2)
    return LlamaForCausalLM(cfg)


def train_briefly(model, tokenizer, data_dir, steps=120, seqlen=64, seed=0):
    """A few AdamW steps on the training text, so that quantization noise can only hurt."""
    with open(os.path.join(data_dir, "wikitext-2/train.txt")) as f:
        ids = torch.tensor(tokenizer(f.read()).input_ids)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seqlen, (16,), generator=g)
        batch = torch.stack([ids[s:s + seqlen] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def build(root, family="opt", steps=120):
    """Write data under root/data and a briefly trained model + tokenizer under root/model."""
    data = write_data(os.path.join(root, "data"))
    tokenizer = make_tokenizer()
    model = train_briefly(make_model(family, len(tokenizer)), tokenizer, data, steps=steps)
    out = os.path.join(root, "model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return data, out
