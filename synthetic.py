"""Two-class spiral, fully connected nets, CE vs RLO (paper Sec. 4 'Swiss-roll', Fig. 2b; App. A.4.2, Fig. 6).

1500 points, 70/30 train/test split, FC nets with 2, 3 and 4 linear layers (hidden 100, ReLU), lr 0.01,
k = 3, trained full batch for 1000, 100 and 50 iterations. The paper does not name the optimiser; Adam is
the default here (plain GD at lr 0.01 barely moves a 3- or 4-layer net in 50-100 steps), `--optimizers gd`
runs plain full-batch gradient descent too. Every trained model is saved (state_dict + config) for
hessian.py.

    python synthetic.py                                   # results/synthetic.md, results/fig2_*.png
    python synthetic.py --depths 2 --seeds 0 --iters 20 --out-dir /tmp/syn --report /tmp/syn.md
"""
import math
import os

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

import losses
from utils.cli import ArgumentParser, UsageError, run_cli
from utils.runio import atomic_torch_save, atomic_write_json, atomic_write_text, write_config

# Paper App. A.4.2: 2, 3, 4-layer FCNs trained 1000, 100, 50 iterations.
DEPTH_ITERS = {2: 1000, 3: 100, 4: 50}
OPTIMIZERS = {
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
    "gd": lambda params, lr: torch.optim.SGD(params, lr=lr),
}


def make_spiral(n=1500, noise=0.05, seed=0):
    """Two interleaved Archimedean spirals, 2 turns each, radius in [0.1, 1].

    Class c has angle theta = 4 pi t + c pi and radius t, with t = 0.1 + 0.9 sqrt(u), u ~ U(0, 1) (sqrt
    spreads points evenly along the arm), plus N(0, noise^2) jitter. Returns float32 X (n, 2), int64 y.
    """
    gen = np.random.default_rng(seed)
    y = np.arange(n) % 2
    t = 0.1 + 0.9 * np.sqrt(gen.uniform(size=n))
    theta = 4 * math.pi * t + math.pi * y
    X = np.stack([t * np.cos(theta), t * np.sin(theta)], 1) + gen.normal(scale=noise, size=(n, 2))
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def split(n, train_frac=0.7, seed=0):
    """Random train/test index split (70/30 in the paper)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(round(train_frac * n))
    return perm[:cut], perm[cut:]


def spiral_data(config):
    """(X_train, y_train, X_test, y_test) exactly as the run described by `config` saw them."""
    X, y = make_spiral(config["n"], config["noise"], config["data_seed"])
    tr, te = split(config["n"], config["train_frac"], config["data_seed"])
    return X[tr], y[tr], X[te], y[te]


def build_fcn(depth, hidden=100, in_dim=2, num_classes=2):
    """`depth` linear layers with ReLU between them (depth 2 = one hidden layer)."""
    if depth < 2:
        raise UsageError(f"depth must be >= 2, got {depth}")
    dims = [in_dim] + [hidden] * (depth - 1)
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(dims[-1], num_classes))


def loss_fn(config):
    return losses.get_loss(config["loss"], k=config["k"], m=config["m"])


def train_one(config):
    """Train one net full batch; returns (model, record with accuracies and the loss curve)."""
    torch.manual_seed(config["seed"])
    X_tr, y_tr, X_te, y_te = spiral_data(config)
    model = build_fcn(config["depth"], config["hidden"])
    opt = OPTIMIZERS[config["optimizer"]](model.parameters(), config["lr"])
    criterion, curve = loss_fn(config), []
    for _ in range(config["iters"]):
        opt.zero_grad(set_to_none=True)
        loss = criterion(model(X_tr), y_tr)
        loss.backward()
        opt.step()
        curve.append(loss.item())
    model.eval()
    with torch.no_grad():
        record = {"train_acc": accuracy(model, X_tr, y_tr), "test_acc": accuracy(model, X_te, y_te),
                  "final_loss": criterion(model(X_tr), y_tr).item(), "curve": curve}
    record["margin"] = mean_margin(model, X_tr, y_tr)
    return model, record


def accuracy(model, X, y):
    return (model(X).argmax(1) == y).float().mean().item()


def probability_grid(model, lim=1.2, res=300):
    """P(class 1) on a res x res grid over [-lim, lim]^2: (xs, ys, probs)."""
    xs = torch.linspace(-lim, lim, res)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    with torch.no_grad():
        probs = torch.softmax(model(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)), 1)[:, 1]
    return gx.numpy(), gy.numpy(), probs.reshape(res, res).numpy()


def mean_margin(model, X, y, lim=1.2, res=300):
    """Mean input-space distance from correctly classified points to the decision boundary.

    The boundary is approximated by the grid cells whose predicted class differs from a neighbour's.
    """
    from scipy.spatial import cKDTree
    gx, gy, probs = probability_grid(model, lim, res)
    cls = probs >= 0.5
    edge = np.zeros_like(cls)
    edge[:, 1:] |= cls[:, 1:] != cls[:, :-1]
    edge[1:, :] |= cls[1:, :] != cls[:-1, :]
    if not edge.any():
        return float("nan")
    tree = cKDTree(np.stack([gx[edge], gy[edge]], 1))
    with torch.no_grad():
        right = (model(X).argmax(1) == y).numpy()
    dist, _ = tree.query(X.numpy()[right])
    return float(dist.mean()) if len(dist) else float("nan")


def plot_boundaries(path, panels):
    """Fig. 2b / 6 style: P(class 1) colour map, white decision boundary, training points on top."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    for ax, (title, model, X, y) in zip(axes[0], panels):
        gx, gy, probs = probability_grid(model)
        image = ax.contourf(gx, gy, probs, levels=np.linspace(0, 1, 21), cmap="RdBu_r")
        ax.contour(gx, gy, probs, levels=[0.5], colors="white", linewidths=2.5)
        colours = np.where(y == 1, "#ffd400", "#00e5ff")  # visible on both red and blue
        ax.scatter(X[:, 0], X[:, 1], c=colours, s=7, edgecolors="k", linewidths=0.3)
        ax.set(title=title, xticks=[], yticks=[], aspect="equal")
        fig.colorbar(image, ax=ax, ticks=[0, 0.5, 1], fraction=0.046)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_grid(args):
    """Train every (optimizer, depth, loss, seed); save each model; return the list of records."""
    records, grid = [], [(o, d, l, s) for o in args.optimizers for d in args.depths
                         for l in args.losses for s in args.seeds]
    for opt, depth, loss, seed in tqdm(grid, desc="spiral nets"):
        config = {"optimizer": opt, "depth": depth, "hidden": args.hidden, "loss": loss, "k": args.k,
                  "m": args.m, "lr": args.lr, "iters": args.iters or DEPTH_ITERS.get(depth, 100),
                  "seed": seed, "data_seed": seed, "n": args.n, "noise": args.noise, "train_frac": 0.7}
        model, record = train_one(config)
        path = os.path.join(args.out_dir, "models", f"{opt}_fc{depth}_{loss}_s{seed}.pt")
        atomic_torch_save({"model": model.state_dict(), "config": config, "kind": "synthetic"}, path)
        records.append({**config, **record, "path": path})
        if seed == args.seeds[0] and args.fig_prefix:
            records[-1]["_model"] = model
    return records


def figures(args, records):
    for opt in args.optimizers:
        for depth in args.depths:
            runs = [r for r in records if "_model" in r and r["optimizer"] == opt and r["depth"] == depth]
            panels = []
            for r in runs:
                X, y, _, _ = spiral_data(r)
                panels.append((f"{r['loss']} ({opt}, {depth} layers, {r['iters']} it): "
                               f"test {100 * r['test_acc']:.1f}%", r["_model"], X.numpy(), y.numpy()))
            if panels:
                plot_boundaries(f"{args.fig_prefix}{opt}_fc{depth}.png", panels)


def summarise(records, key):
    """{(optimizer, depth, loss): values of `key` over seeds}."""
    out = {}
    for r in records:
        out.setdefault((r["optimizer"], r["depth"], r["loss"]), []).append(r[key])
    return out


def _pm(values, scale=100.0, digits=2):
    v = scale * np.asarray(values, dtype=float)
    if np.isnan(v).all():
        return "-"
    return f"{np.nanmean(v):.{digits}f} ± {np.nanstd(v):.{digits}f}"


def _three_way(diffs):
    """(mean, SE) per setting -> supported (every gain > 2 SE) / not supported (a loss > 2 SE) / inconclusive."""
    if all(d > 2 * se for d, se in diffs):
        return "supported"
    if any(d < -2 * se for d, se in diffs):
        return "not supported"
    return "inconclusive at this scale"


CLAIMS = (("test_acc", 100, "RLO beats CE in test accuracy in every setting (paper Fig. 2b and 6: 'RLO outperforms "
                            "CE in term of accuracy in all settings')"),
          ("margin", 1, "RLO's margins (mean distance of correctly classified training points to the boundary) "
                        "are larger (paper Sec. 4.1, Fig. 6)"))


def verdict_lines(args, records):
    """One line per paper claim, optimiser and RLO form, from paired per-seed differences against CE."""
    rlo_forms = [l for l in args.losses if l != "ce"]
    if "ce" not in args.losses or not rlo_forms:
        return ["- (no CE vs RLO comparison in this run)"]
    lines = []
    for key, scale, claim in CLAIMS:
        values = summarise(records, key)
        for rlo in sorted(rlo_forms, key=lambda l: l != args.rlo_loss):
            for opt in args.optimizers:
                diffs, parts = [], []
                for depth in args.depths:
                    ce, other = np.asarray(values[(opt, depth, "ce")]), np.asarray(values[(opt, depth, rlo)])
                    diff = scale * (other - ce)
                    se = diff.std(ddof=1) / math.sqrt(len(diff)) if len(diff) > 1 else 0.0
                    diffs.append((diff.mean(), se))
                    parts.append(f"{depth} layers {scale * other.mean():.3g} vs {scale * ce.mean():.3g} "
                                 f"(diff {diff.mean():+.3g} ± {se:.2g} SE)")
                lines.append(f"- **{claim}**, {opt}, RLO = `{rlo}`: {_three_way(diffs)} (supported needs a gain "
                             f"> 2 SE in every setting, not supported a loss > 2 SE in one; {len(args.seeds)} "
                             "seeds; paper: figures only, no numbers). " + "; ".join(parts) + ".")
    return lines


def write_report(args, records):
    acc, tr_acc = summarise(records, "test_acc"), summarise(records, "train_acc")
    margin, final = summarise(records, "margin"), summarise(records, "final_loss")
    lines = ["# Spiral nets: CE vs RLO (paper Fig. 2b, Fig. 6)", "",
             f"Produced by `python synthetic.py {' '.join(args.argv)}` (scripts/fig2.sh). {args.n} points, "
             f"noise {args.noise}, 70/30 split, FC nets hidden {args.hidden}, lr {args.lr}, k {args.k}, m {args.m}, "
             f"full batch, iterations {args.iters or DEPTH_ITERS}, seeds {args.seeds} (each seed draws its own "
             "data, split and initialisation). Loss forms: `ce` = cross-entropy, `root` = m (1 - p_y^(1/k)) "
             "(authors' code form), `root_paper` = k (p_y^(-1/k) - 1) (paper eq. 4 form). Mean ± std over "
             "seeds (numpy, ddof 0).", "", "## Verdicts", ""]
    lines += verdict_lines(args, records)
    lines += ["", "## Accuracy", "", "| optimizer | layers | iterations | loss | test acc % | train acc % | "
              "mean margin | final train loss |", "|---|---|---|---|---|---|---|---|"]
    for key in acc:
        opt, depth, loss = key
        iters = args.iters or DEPTH_ITERS.get(depth, 100)
        lines.append(f"| {opt} | {depth} | {iters} | {loss} | {_pm(acc[key])} | {_pm(tr_acc[key])} | "
                     f"{_pm(margin[key], 1, 4)} | {_pm(final[key], 1, 4)} |")
    if args.fig_prefix:
        lines += ["", "Decision boundaries (seed %d): " % args.seeds[0] +
                  ", ".join(f"`{args.fig_prefix}{o}_fc{d}.png`" for o in args.optimizers for d in args.depths)]
    atomic_write_text(args.report, "\n".join(lines) + "\n")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depths", type=int, nargs="+", default=[2, 3, 4], help="number of linear layers")
    p.add_argument("--iters", type=int, default=None, help="iterations for every depth (default 1000/100/50)")
    p.add_argument("--losses", nargs="+", default=["ce", "root"], choices=sorted(losses.LOSSES),
                   help="losses to compare (registry names)")
    p.add_argument("--rlo-loss", type=str, default="root", choices=sorted(losses.LOSSES),
                   help="which loss the verdicts treat as RLO (default: the authors' code form)")
    p.add_argument("--optimizers", nargs="+", default=["adam"], choices=list(OPTIMIZERS),
                   help="full-batch optimiser(s); the paper does not say which")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (paper: 0.01)")
    p.add_argument("--k", type=float, default=3.0, help="RLO k (paper: 3)")
    p.add_argument("--m", type=float, default=3.0, help="RLO m of the code form (authors' default 3)")
    p.add_argument("--hidden", type=int, default=100, help="hidden width (paper: 100)")
    p.add_argument("--n", type=int, default=1500, help="number of spiral points (paper: 1500)")
    p.add_argument("--noise", type=float, default=0.05, help="std of the Gaussian jitter")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (data + init)")
    p.add_argument("--out-dir", type=str, default="runs/synthetic", help="run directory (models/, results.json)")
    p.add_argument("--report", type=str, default="results/synthetic.md", help="markdown report path")
    p.add_argument("--fig-prefix", type=str, default="results/fig2_", help="figure prefix ('' = no figures)")
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    return args


def main(args):
    if args.lr <= 0 or args.k <= 0 or args.m <= 0 or args.n < 10 or args.hidden < 1:
        raise UsageError("need --lr, --k, --m > 0, --n >= 10 and --hidden >= 1")
    if any(d < 2 for d in args.depths) or (args.iters is not None and args.iters < 1):
        raise UsageError("every --depths value must be >= 2 and --iters >= 1")
    torch.set_num_threads(1)  # tiny nets: extra threads only contend on a shared machine
    write_config(args.out_dir, {k: v for k, v in vars(args).items() if k != "argv"})
    records = run_grid(args)
    if args.fig_prefix:
        figures(args, records)
    clean = [{k: v for k, v in r.items() if k != "_model"} for r in records]
    atomic_write_json(os.path.join(args.out_dir, "results.json"), clean)
    write_report(args, clean)
    return clean


if __name__ == "__main__":
    run_cli(main, parse_args())
