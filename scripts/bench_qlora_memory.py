"""Peak memory of one LoRA training step on a codes-only quantized base against a dense fp32 base.

The model is an OPT with opt-125m's layer geometry (hidden 768, FFN 3072, 12 heads), --layers decoder layers
and a --vocab vocabulary, float32 on the CPU, LoRA r 8 on every decoder linear (peft). "codes-only" replaces
each decoder linear with a quant.qlinear.QuantLinear holding uint8 codes, its grid and the factored butterfly
transforms (incoherence processing), built from random codes: memory does not depend on their values, and no
quantization run is needed. "dense fp32" keeps nn.Linear weights. Each case runs in a fresh interpreter and
reports the bytes of the model's tensors (parameters + buffers) and the rise of the peak resident set size
(VmHWM, reset after the model exists) during forward + backward + AdamW step on --bs x --block tokens.

    python -m scripts.bench_qlora_memory            # writes results/bench_qlora_memory.md and .json
"""
import json
import os
import platform
import subprocess
import sys
import time

import utils.tv_compat  # noqa: F401  (transformers and peft import torchvision)

import torch

from utils import report
from utils.cli import ArgumentParser, run_cli
from utils.memory import peak_rss, reset_peak_rss
from utils.runio import REPO

CASES = ("dense fp32", "codes-only 2-bit", "codes-only 4-bit")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=4, help="decoder layers")
    p.add_argument("--vocab", type=int, default=8192, help="vocabulary size")
    p.add_argument("--bs", type=int, default=4, help="sequences per step")
    p.add_argument("--block", type=int, default=256, help="tokens per sequence")
    p.add_argument("--case", choices=CASES, default=None, help="run one case here and print JSON (internal)")
    p.add_argument("--out", type=str, default=os.path.join(REPO, "results", "bench_qlora_memory.md"),
                   help="markdown report")
    return p.parse_args(argv)


def model(layers, vocab, bits):
    from transformers import OPTConfig, OPTForCausalLM
    from quant import qlinear
    from quant.driver import LinearRecord, QuantConfig
    from quant.families import FAMILIES
    torch.manual_seed(0)
    net = OPTForCausalLM(OPTConfig(num_hidden_layers=layers, vocab_size=vocab, hidden_size=768, ffn_dim=3072,
                                   num_attention_heads=12, word_embed_proj_dim=768, max_position_embeddings=512,
                                   dropout=0.0, attention_dropout=0.0, activation_dropout=0.0))
    if bits:
        cfg = QuantConfig(wbits=bits, qfn="b", rescale=True, proj="butterfly")
        records = {}
        for i, layer in enumerate(FAMILIES["opt"].base(net).layers):
            for name, lin in layer.named_modules():
                if isinstance(lin, torch.nn.Linear):
                    out, inp = lin.weight.shape
                    records[f"layers.{i}.{name}"] = LinearRecord(
                        torch.randint(0, 2 ** bits, (out, inp), dtype=torch.uint8), torch.ones(1, 1) * 0.01,
                        torch.ones(1, 1) * (2 ** bits - 1) / 2, torch.zeros(inp, dtype=torch.long), i,
                        torch.ones(inp))
        qlinear.install(net, FAMILIES["opt"], cfg, records)
    return net


def run_case(case, layers, vocab, bs, block):
    import ft_opt
    import losses
    from peft import LoraConfig, get_peft_model
    from quant import qlinear
    bits = 0 if case == "dense fp32" else int(case.split()[1][0])
    net = model(layers, vocab, bits)
    targets = qlinear.quant_linear_names(net) if bits else [
        n for n, m in net.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]
    config = qlinear.lora_config(8, 16, 0.0, targets) if bits else LoraConfig(r=8, lora_alpha=16,
                                                                               target_modules=targets)
    peft_model = get_peft_model(net, config)
    tensor_bytes = sum(t.numel() * t.element_size() for t in list(peft_model.parameters()) +
                       list(peft_model.buffers()))
    ids = torch.randint(4, vocab, (bs, block), generator=torch.Generator().manual_seed(1))
    batch = ft_opt.collate([{"input_ids": r.tolist(), "labels": r.tolist()} for r in ids])
    capture = ft_opt.HiddenStates(peft_model)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
    base = reset_peak_rss()
    start = time.perf_counter()
    ft_opt.batch_loss(peft_model, capture, batch, losses.get_form("root", k=5, m=5), "mean").backward()
    opt.step()
    return {"case": case, "tensor_mb": tensor_bytes / 2 ** 20, "step_peak_mb": (peak_rss() - base) / 2 ** 20,
            "seconds": time.perf_counter() - start}


def flat_row(found, args):
    bits = 0 if found["case"] == "dense fp32" else int(found["case"].split()[1][0])
    return {"method": found["case"], "bits": bits, "layers": args.layers, "vocab": args.vocab, "bs": args.bs,
            "block": args.block, "tensor_mib": found["tensor_mb"], "step_peak_mib": found["step_peak_mb"],
            "sum_mib": found["tensor_mb"] + found["step_peak_mb"], "seconds": found["seconds"]}


def report_lines(args, rows):
    lines = ["# Peak memory of a LoRA training step: codes-only quantized base vs dense fp32 base", "",
             f"OPT with opt-125m's layer geometry, {args.layers} decoder layers, vocabulary {args.vocab}, LoRA r 8 on "
             f"every decoder linear, one step of {args.bs} x {args.block} tokens (forward, backward, AdamW), "
             f"float32, CPU ({platform.machine()}, torch {torch.__version__}), one fresh process per case.", "",
             "| base | model tensors (MiB) | step peak rise (MiB) | sum (MiB) | step seconds |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['tensor_mib']:.1f} | {r['step_peak_mib']:.1f} | {r['sum_mib']:.1f} | "
                     f"{r['seconds']:.2f} |")
    lines += ["", "Codes are stored one per byte (uint8, not bit-packed), so 2- and 4-bit bases take the same memory;",
              "the embeddings, LM head and layer norms stay dense fp32 in every case. Step seconds were measured on",
              "a shared CPU and are only indicative.", "", report.load_note(), "",
              f"Command: `python -m scripts.bench_qlora_memory --layers {args.layers} --vocab {args.vocab} "
              f"--bs {args.bs} --block {args.block}`"]
    return lines


def in_subprocess(case, args):
    """run_case in a fresh interpreter (one thread), so each case's peak RSS is its own."""
    cmd = [sys.executable, "-m", "scripts.bench_qlora_memory", "--case", case, "--layers", str(args.layers),
           "--vocab", str(args.vocab), "--bs", str(args.bs), "--block", str(args.block)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(args):
    if args.case:
        torch.set_num_threads(1)
        print(json.dumps(run_case(args.case, args.layers, args.vocab, args.bs, args.block)))
        return None
    rows = []
    for case in CASES:
        rows.append(flat_row(in_subprocess(case, args), args))
        print(rows[-1], flush=True)
    report.write_report(args.out, report_lines(args, rows), rows)
    return rows


if __name__ == "__main__":
    run_cli(main, parse_args())
