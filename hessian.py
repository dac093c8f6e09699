"""Training-loss Hessian spectrum of a trained model, CE vs RLO (paper Fig. 3a, Lemmas 3.2-3.3).

Top eigenvalues by power iteration and Lanczos, the spectral density by stochastic Lanczos quadrature
(utils/hvp.py, in the manner of PyHessian), all through Hessian-vector products of the model's own
training loss (the loss it was trained with, from losses.py). Small models (<= --exact-max-params) also
get the explicit Hessian and its exact eigenvalues. Inputs: checkpoints of kind 'synthetic' (synthetic.py's
OUT/models/*.pt) or 'train' (train.py's, old ones included); the loader dispatches on the checkpoint's kind.

Condition numbers (a trained net's Hessian is indefinite and has a bulk of near-zero eigenvalues, so the
textbook lambda_max / lambda_min is meaningless): kappa_q = lambda_max / (q-quantile of the eigenvalues
above 1e-6 lambda_max), q = 0.1 and 0.5, from the SLQ distribution (and from the exact spectrum when available);
exact kappa_pos = lambda_max / smallest eigenvalue above 1e-6 lambda_max.

It writes a run directory (config.json, metrics.jsonl, results.json: one record per checkpoint, with the SLQ
nodes and weights and the exact eigenvalues); `python -m scripts.fig3a OUT` builds results/fig3a.md and
Fig. 3a from it.

    python hessian.py runs/synthetic/models/adam_fc2_ce_s0.pt runs/synthetic/models/adam_fc2_root_s0.pt --out runs/hessian
"""
import argparse
import math

from utils.cli import ArgumentParser, UsageError, default_data_dir, require_file, run_cli
from utils.runio import RunDir, add_run_args, set_threads

KINDS = ("synthetic", "train")  # the checkpoint kinds this script can rebuild a model and its data from
DEFAULT_OUT = "runs/hessian"


# ------------------------------------------------------------------------------------------- loading
def synthetic_target(ckpt, args):
    """Model, data batches and loss of a synthetic.py run (its training set, full batch)."""
    import losses
    from models.fcn import fcn_from_config
    from utils.spiral import spiral_data
    config = ckpt["config"]
    model = fcn_from_config(config)
    model.load_state_dict(ckpt["model"])
    X, y, _, _ = spiral_data(config)
    if args.double:
        model, X = model.double(), X.double()
    setting = {k: v for k, v in config.items() if k not in ("loss", "seed", "data_seed")}
    loss = losses.get_loss(config["loss"], k=config["k"], m=config["m"])
    return {"model": model, "batches": [(X, y, 1.0)], "loss": loss, "config": config,
            "label": f"{config['optimizer']} fc{config['depth']} {config['loss']} s{config['seed']}",
            "setting": f"{config['optimizer']} fc{config['depth']}", "setting_key": sorted(setting.items())}


def _num_classes(info):
    return info["num_classes"] if isinstance(info, dict) else info.num_classes


def train_target(ckpt, args):
    """Model, batches and loss of a train.py checkpoint, on --samples training images (no augmentation)."""
    import torch
    import losses
    from models import build_model
    from utils.datasets import build_datasets
    a = ckpt["config"]
    data_dir = args.data_dir or a.get("data_dir") or default_data_dir()
    train_set, _, info = build_datasets(a["dataset"], data_dir, a["size"], False, subset=args.samples,
                                        seed=args.seed)
    model = build_model(a["net"], _num_classes(info), a["size"], patch=a.get("patch", 4),
                        dimhead=a.get("dimhead", 512))
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    model.load_state_dict(state)
    if len(train_set) > args.samples:
        train_set = torch.utils.data.Subset(train_set, range(args.samples))
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=False)
    n = len(train_set)
    batches = [(x.double() if args.double else x, y, len(y) / n) for x, y in loader]
    if args.double:
        model = model.double()
    loss = losses.get_loss(a["loss"], k=a.get("k", 3.0), m=a.get("m", 3.0))
    setting = {k: v for k, v in a.items() if k not in ("loss", "k", "m", "seed")}
    return {"model": model, "batches": batches, "loss": loss, "config": dict(a),
            "label": f"{a['net']} {a['dataset']} {a['loss']}", "setting": f"{a['net']} {a['dataset']}",
            "setting_key": sorted((k, str(v)) for k, v in setting.items())}


TARGETS = {"synthetic": synthetic_target, "train": train_target}


def load_target(path, args):
    """The model, data and loss a checkpoint describes, rebuilt by its kind."""
    import utils.tv_compat  # noqa: F401  (before models/, which imports torchvision)
    from utils.checkpoint import load_checkpoint
    require_file(path, "a synthetic.py model (runs/synthetic/models/*.pt) or a train.py checkpoint")
    ckpt = load_checkpoint(path, kind=KINDS)
    if "model" not in ckpt:
        raise UsageError(f"{path}: a '{ckpt['kind']}' checkpoint without model weights")
    target = TARGETS[ckpt["kind"]](ckpt, args)
    target["model"].eval()  # dropout off: the Hessian of a fixed function
    target["path"] = path
    return target


def operator(target):
    from utils import hvp
    model, loss = target["model"], target["loss"]
    return hvp.hessian_operator(model.parameters(), target["batches"],
                                lambda b: b[2] * loss(model(b[0]), b[1]))


# ------------------------------------------------------------------------------------------ analysis
def positive_quantile(nodes, weights, q, rel=1e-6):
    """q-quantile of the eigenvalue distribution restricted to eigenvalues above rel * its maximum."""
    from utils import hvp
    keep = nodes > rel * nodes.max()
    return hvp.weighted_quantile(nodes[keep], weights[keep], q) if keep.any() else float("nan")


def exact_spectrum(matvec, dim, dtype):
    """Exact eigenvalues and the condition numbers built from them."""
    import torch
    from utils import hvp
    eig = torch.linalg.eigvalsh(hvp.explicit_hessian(matvec, dim, dtype).double())
    top = eig[-1].item()
    pos = eig[eig > 1e-6 * top]  # below this, "positive" is rounding noise of the explicit Hessian
    uniform = torch.full_like(eig, 1.0 / len(eig))
    return {"eigenvalues": eig.tolist(), "lambda_max": top, "lambda_min": eig[0].item(),
            "negative_fraction": (eig < -1e-6 * top).double().mean().item(),
            "kappa_pos": top / pos[0].item() if len(pos) else math.inf,
            "kappa_q10": top / positive_quantile(eig, uniform, 0.1),
            "kappa_q50": top / positive_quantile(eig, uniform, 0.5)}


def train_loss(target):
    import torch
    with torch.no_grad():
        return sum(float(b[2] * target["loss"](target["model"](b[0]), b[1])) for b in target["batches"])


def analyse(target, args):
    """Power iteration, Lanczos top eigenvalues, SLQ density and (small models) the exact spectrum."""
    import torch
    from utils import hvp
    matvec = operator(target)
    dim, dtype = matvec.dim, torch.float64 if args.double else torch.float32
    top_power, _, power_steps = hvp.power_iteration(matvec, dim, args.power_iters, seed=args.seed, dtype=dtype)
    top, smallest = hvp.lanczos_top(matvec, dim, args.lanczos_steps, args.top, seed=args.seed, dtype=dtype)
    nodes, weights = hvp.slq(matvec, dim, args.slq_probes, args.slq_steps, seed=args.seed, dtype=dtype)
    lam_max = max(top[0], max(nodes).item())
    record = {"label": target["label"], "setting": target["setting"], "path": target["path"], "params": dim,
              "loss": target["config"].get("loss"), "seed": target["config"].get("seed"),
              "lambda_power": top_power, "power_steps": power_steps, "lanczos_top": top,
              "lanczos_min": smallest, "trace_slq": dim * float((nodes * weights).sum()),
              "kappa_q10": lam_max / positive_quantile(nodes, weights, 0.1),
              "kappa_q50": lam_max / positive_quantile(nodes, weights, 0.5),
              "slq_nodes": nodes.tolist(), "slq_weights": weights.tolist(),
              "train_loss": train_loss(target)}
    if dim <= args.exact_max_params:
        record["exact"] = exact_spectrum(matvec, dim, dtype)
    return record


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="synthetic.py models/*.pt or train.py checkpoints")
    p.add_argument("--rlo-loss", type=str, default="root",
                   help="the loss the report compares against ce, recorded in config.json (default: root)")
    p.add_argument("--power-iters", type=int, default=100, help="power-iteration steps, at most (default: 100)")
    p.add_argument("--lanczos-steps", type=int, default=60, help="Lanczos steps for the top eigenvalues (default: 60)")
    p.add_argument("--top", type=int, default=5, help="how many top eigenvalues to report (default: 5)")
    p.add_argument("--slq-probes", type=int, default=3, help="SLQ random probes (default: 3)")
    p.add_argument("--slq-steps", type=int, default=60, help="Lanczos steps per SLQ probe (default: 60)")
    p.add_argument("--exact-max-params", type=int, default=1000,
                   help="form the explicit Hessian when the model has at most this many parameters (default: 1000)")
    p.add_argument("--float32", dest="double", action="store_false", help="HVPs in float32 (default: float64)")
    p.add_argument("--samples", type=int, default=512, help="train.py checkpoints: training images used (default: 512)")
    p.add_argument("--batch-size", type=int, default=128, help="train.py checkpoints: HVP batch size (default: 128)")
    p.add_argument("--data-dir", type=str, default=None,
                   help="train.py checkpoints: data folder (default: the checkpoint's, else the shared one)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random start / probe vectors (default: 0)")
    add_run_args(p, default_out=DEFAULT_OUT)
    p.add_argument("--out-dir", dest="out", help="the same as --out (the older name)")
    p.add_argument("--report", default=None,
                   help="ignored, kept so older command lines run: python -m scripts.fig3a OUT writes the report")
    p.add_argument("--fig", default=None, help="ignored, as --report (the report builder draws Fig. 3a)")
    p.set_defaults(threads=1)  # small models: extra threads only contend on a shared machine
    args = p.parse_args(argv)
    import losses  # after parsing, so that -h never imports torch
    if args.rlo_loss not in losses.LOSSES:
        p.error(f"unknown --rlo-loss {args.rlo_loss!r}; choose from {', '.join(sorted(losses.LOSSES))}")
    return args


def main(args):
    from tqdm import tqdm
    if min(args.power_iters, args.lanczos_steps, args.top, args.slq_probes, args.slq_steps, args.samples) < 1:
        raise UsageError("iteration, step, probe and sample counts must be >= 1")
    if args.resume:
        raise UsageError("--resume: hessian.py runs in one go; rerun with --overwrite")
    if args.report or args.fig:
        print("note: --report/--fig are ignored; build the report with python -m scripts.fig3a OUT")
    set_threads(args.threads)
    targets = [load_target(path, args) for path in args.checkpoints]  # fail early on a bad file
    config = {k: v for k, v in vars(args).items() if k not in ("report", "fig")}
    run = RunDir(args.out or DEFAULT_OUT, config, overwrite=args.overwrite)
    try:
        records = []
        for target in tqdm(targets, desc="hessians"):
            records.append(analyse(target, args))
            run.log({k: v for k, v in records[-1].items() if k not in ("slq_nodes", "slq_weights", "exact")})
        return run.finish({"checkpoints": records})
    finally:
        run.release()


if __name__ == "__main__":
    run_cli(main, parse_args())
