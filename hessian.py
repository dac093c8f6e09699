"""Training-loss Hessian spectrum of a trained model, CE vs RLO (paper Fig. 3a, Lemmas 3.2-3.3).

Top eigenvalues by power iteration and Lanczos, the spectral density by stochastic Lanczos quadrature
(utils/hvp.py, in the manner of PyHessian), all through Hessian-vector products of the model's own
training loss (the loss it was trained with, from losses.py). Small models (<= --exact-max-params) also
get the explicit Hessian and its exact eigenvalues. Inputs: checkpoints written by synthetic.py
(models/*.pt) or by train.py (dict with 'model' and 'args').

Condition numbers (a trained net's Hessian is indefinite and has a bulk of near-zero eigenvalues, so the
textbook lambda_max / lambda_min is meaningless): kappa_q = lambda_max / (q-quantile of the eigenvalues
above 1e-6 lambda_max), q = 0.1 and 0.5, from the SLQ distribution (and from the exact spectrum when available);
exact kappa_pos = lambda_max / smallest eigenvalue above 1e-6 lambda_max.

    python hessian.py runs/synthetic/models/adam_fc2_ce_s0.pt runs/synthetic/models/adam_fc2_root_s0.pt
"""
import utils.tv_compat  # noqa: F401  (must precede anything that imports torchvision: train.py models)

import math
import os

import numpy as np
import torch
from tqdm import tqdm

import losses
from utils import hvp
from utils.cli import ArgumentParser, UsageError, default_data_dir, require_file, run_cli
from utils.runio import atomic_write_json, atomic_write_text, write_config


# ------------------------------------------------------------------------------------------- loading
def load_checkpoint(path):
    require_file(path, "a synthetic.py model (runs/synthetic/models/*.pt) or a train.py checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a corrupt or foreign file is the user's error
        raise UsageError(f"{path}: cannot be read as a checkpoint ({type(err).__name__})") from err
    if not isinstance(ckpt, dict) or "model" not in ckpt or not ({"config", "args"} & set(ckpt)):
        raise UsageError(f"{path}: expected a dict with 'model' and 'config' (synthetic.py) or 'args' (train.py)")
    return ckpt


def synthetic_target(ckpt, args):
    """Model, data batches and loss of a synthetic.py run (its training set, full batch)."""
    import synthetic
    config = ckpt["config"]
    model = synthetic.build_fcn(config["depth"], config["hidden"])
    model.load_state_dict(ckpt["model"])
    X, y, _, _ = synthetic.spiral_data(config)
    if args.double:
        model, X = model.double(), X.double()
    setting = {k: v for k, v in config.items() if k not in ("loss", "seed", "data_seed")}
    return {"model": model, "batches": [(X, y, 1.0)], "loss": synthetic.loss_fn(config), "config": config,
            "label": f"{config['optimizer']} fc{config['depth']} {config['loss']} s{config['seed']}",
            "setting": f"{config['optimizer']} fc{config['depth']}", "setting_key": sorted(setting.items())}


def _num_classes(info):
    return info["num_classes"] if isinstance(info, dict) else info.num_classes


def train_target(ckpt, args):
    """Model, batches and loss of a train.py checkpoint, on --samples training images (no augmentation)."""
    from models import build_model
    from utils.datasets import build_datasets
    a = ckpt["args"]
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


def load_target(path, args):
    ckpt = load_checkpoint(path)
    target = synthetic_target(ckpt, args) if "config" in ckpt else train_target(ckpt, args)
    target["model"].eval()  # dropout off: the Hessian of a fixed function
    target["path"] = path
    return target


def operator(target):
    model, loss = target["model"], target["loss"]
    return hvp.hessian_operator(model.parameters(), target["batches"],
                                lambda b: b[2] * loss(model(b[0]), b[1]))


# ------------------------------------------------------------------------------------------ analysis
def positive_quantile(nodes, weights, q, rel=1e-6):
    """q-quantile of the eigenvalue distribution restricted to eigenvalues above rel * its maximum."""
    keep = nodes > rel * nodes.max()
    return hvp.weighted_quantile(nodes[keep], weights[keep], q) if keep.any() else float("nan")


def exact_spectrum(matvec, dim, dtype):
    """Exact eigenvalues and the condition numbers built from them."""
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
    with torch.no_grad():
        return sum(float(b[2] * target["loss"](target["model"](b[0]), b[1])) for b in target["batches"])


def analyse(target, args):
    """Power iteration, Lanczos top eigenvalues, SLQ density and (small models) the exact spectrum."""
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


# ------------------------------------------------------------------------------------ figure, report
def plot_spectra(path, records, exact=False):
    """Fig. 3a style: per setting, the eigenvalue distribution of each loss (log count)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    settings = sorted({r["setting"] for r in records})
    palette = {"ce": "tab:blue", "root": "tab:red", "root_paper": "tab:green"}
    seeds = sorted({r["seed"] for r in records}, key=str)
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings), 4), squeeze=False)
    for ax, setting in zip(axes[0], settings):
        runs = [r for r in records if r["setting"] == setting]
        if exact:  # shared bins so the histograms compare
            every = np.concatenate([r["exact"]["eigenvalues"] for r in runs])
            bins = np.linspace(every.min(), every.max(), 81)
        for r in runs:
            style = {"color": palette.get(r["loss"], "tab:purple"), "lw": 1.3,
                     "linestyle": ["-", "--", ":", "-."][seeds.index(r["seed"]) % 4]}
            if exact:
                values = np.asarray(r["exact"]["eigenvalues"])
                ax.hist(values, bins=bins, histtype="step", label=f"{r['loss']} (s{r['seed']})", **style)
            else:
                nodes, weights = torch.tensor(r["slq_nodes"]), torch.tensor(r["slq_weights"])
                span = (nodes.max() - nodes.min()).item() or 1.0
                grid = torch.linspace(nodes.min().item() - 0.05 * span, nodes.max().item() + 0.05 * span, 600,
                                      dtype=nodes.dtype)
                dens = hvp.density(nodes, weights, grid, sigma=0.01 * span)
                ax.plot(grid.numpy(), dens.clamp_min(1e-8).numpy(), label=f"{r['loss']} (s{r['seed']})", **style)
        ax.set(yscale="log", title=f"{setting}: {'exact eigenvalues' if exact else 'SLQ density'}",
               xlabel="eigenvalue", ylabel="count" if exact else "density")
        ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _g(x):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4g}"


def table_lines(records):
    lines = ["| model | params | train loss | λmax power | λmax Lanczos | λmin Lanczos | trace (SLQ) | κ_q10 SLQ | "
             "κ_q50 SLQ | exact κ_pos | exact κ_q10 | exact κ_q50 | exact neg. frac |", "|---" * 13 + "|"]
    for r in records:
        ex = r.get("exact", {})
        lines.append(f"| {r['label']} | {r['params']} | {_g(r['train_loss'])} | {_g(r['lambda_power'])} | "
                     f"{_g(r['lanczos_top'][0])} | {_g(r['lanczos_min'])} | {_g(r['trace_slq'])} | "
                     f"{_g(r['kappa_q10'])} | {_g(r['kappa_q50'])} | {_g(ex.get('kappa_pos'))} | "
                     f"{_g(ex.get('kappa_q10'))} | {_g(ex.get('kappa_q50'))} | {_g(ex.get('negative_fraction'))} |")
    return lines


def pairs(records, base, rlo):
    """{setting: [(base record, rlo record)]}, matched on setting and seed."""
    out = {}
    for r in records:
        if r["loss"] != rlo:
            continue
        for b in records:
            if b["loss"] == base and b["setting"] == r["setting"] and b["seed"] == r["seed"]:
                out.setdefault(r["setting"], []).append((b, r))
    return out


def verdict_lines(records, base, rlo):
    matched = pairs(records, base, rlo)
    if not matched:
        return [f"- (no {base} vs {rlo} pairs among the checkpoints: no verdict)"]
    lines = []
    for key, name in (("kappa_q50", "κ_q50 (SLQ)"), ("kappa_q10", "κ_q10 (SLQ)"), ("exact:kappa_pos", "exact κ_pos"),
                      ("exact:kappa_q50", "exact κ_q50"), ("exact:kappa_q10", "exact κ_q10")):
        parts, wins, total = [], 0, 0
        for setting, plist in matched.items():
            def get(r):
                return r.get("exact", {}).get(key[6:]) if key.startswith("exact:") else r[key]
            vals = [(get(b), get(r)) for b, r in plist if get(b) is not None and get(r) is not None]
            if not vals:
                continue
            won = sum(v[1] < v[0] for v in vals)
            wins, total = wins + won, total + len(vals)
            parts.append(f"{setting}: {rlo} lower in {won}/{len(vals)} seeds (median {rlo} "
                         f"{np.median([v[1] for v in vals]):.4g} vs {base} {np.median([v[0] for v in vals]):.4g})")
        if not total:
            continue
        status = "supported" if wins == total else ("not supported" if wins == 0 else
                                                    f"inconclusive at this scale ({wins}/{total} pairs)")
        lines.append(f"- **Fig. 3a / Lemma 3.3: the RLO solution's Hessian is better conditioned than CE's**, by "
                     f"{name}: {status} (paper: histogram only, no numbers). " + "; ".join(parts) + ".")
    return lines


def write_report(args, records):
    lines = ["# Hessian spectrum at the trained solution: CE vs RLO (paper Fig. 3a, Lemma 3.3)", "",
             f"Produced by `python hessian.py {' '.join(args.argv)}` (scripts/fig3a.sh). Training-loss Hessian "
             f"of each checkpoint, by HVPs ({'float64' if args.double else 'float32'}): power iteration "
             f"({args.power_iters} max), Lanczos ({args.lanczos_steps} steps, full reorthogonalisation), SLQ "
             f"({args.slq_probes} Rademacher probes x {args.slq_steps} steps); explicit Hessian for models with "
             f"<= {args.exact_max_params} parameters. κ_q = λmax / q-quantile of the eigenvalues above 1e-6 λmax; "
             "exact κ_pos = λmax / smallest eigenvalue above 1e-6 λmax. The Hessian is of the loss each model "
             f"was trained with (RLO = `{args.rlo_loss}`), on its training set.", "", "## Verdicts", ""]
    lines += verdict_lines(records, "ce", args.rlo_loss)
    lines += ["", "## Every checkpoint", ""] + table_lines(records)
    lines += ["", f"Figures: `{args.fig}` (SLQ densities)" +
              (f", `{exact_fig_path(args.fig)}` (exact eigenvalues)" if any("exact" in r for r in records) else "")]
    atomic_write_text(args.report, "\n".join(lines) + "\n")


def exact_fig_path(fig):
    root, ext = os.path.splitext(fig)
    return f"{root}_exact{ext or '.png'}"


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", help="synthetic.py models/*.pt or train.py checkpoints")
    p.add_argument("--rlo-loss", type=str, default="root", choices=sorted(losses.LOSSES),
                   help="the loss compared against ce in the verdicts (default: authors' code form)")
    p.add_argument("--power-iters", type=int, default=100, help="power-iteration steps (max)")
    p.add_argument("--lanczos-steps", type=int, default=60, help="Lanczos steps for the top eigenvalues")
    p.add_argument("--top", type=int, default=5, help="how many top eigenvalues to report")
    p.add_argument("--slq-probes", type=int, default=3, help="SLQ random probes")
    p.add_argument("--slq-steps", type=int, default=60, help="Lanczos steps per SLQ probe")
    p.add_argument("--exact-max-params", type=int, default=1000,
                   help="form the explicit Hessian when the model has at most this many parameters")
    p.add_argument("--float32", dest="double", action="store_false", help="HVPs in float32 (default float64)")
    p.add_argument("--samples", type=int, default=512, help="train.py checkpoints: training images used")
    p.add_argument("--batch-size", type=int, default=128, help="train.py checkpoints: HVP batch size")
    p.add_argument("--data-dir", type=str, default=None, help="train.py checkpoints: data folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the random start / probe vectors")
    p.add_argument("--out-dir", type=str, default="runs/hessian", help="run directory (config/results.json)")
    p.add_argument("--report", type=str, default="results/hessian.md", help="markdown report path")
    p.add_argument("--fig", type=str, default="results/fig3a.png", help="figure path ('' = none)")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    return args


def main(args):
    if min(args.power_iters, args.lanczos_steps, args.top, args.slq_probes, args.slq_steps, args.samples) < 1:
        raise UsageError("iteration, step, probe and sample counts must be >= 1")
    torch.set_num_threads(1)  # small models: extra threads only contend on a shared machine
    targets = [load_target(path, args) for path in args.checkpoints]  # fail early on a bad file
    write_config(args.out_dir, {k: v for k, v in vars(args).items() if k != "argv"})
    records = [analyse(t, args) for t in tqdm(targets, desc="hessians")]
    atomic_write_json(os.path.join(args.out_dir, "results.json"), records)
    if args.fig:
        plot_spectra(args.fig, records)
        if all("exact" in r for r in records if r["params"] <= args.exact_max_params) and \
                any("exact" in r for r in records):
            plot_spectra(exact_fig_path(args.fig), [r for r in records if "exact" in r], exact=True)
    write_report(args, records)
    return records


if __name__ == "__main__":
    run_cli(main, parse_args())
