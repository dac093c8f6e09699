"""Two-class spiral, fully connected nets, CE vs RLO (paper Sec. 4 'Swiss-roll', Fig. 2b; App. A.4.2, Fig. 6).

1500 points, 70/30 train/test split, FC nets with 2, 3 and 4 linear layers (hidden 100, ReLU), lr 0.01,
k = 3, trained full batch for 1000, 100 and 50 iterations. The paper does not name the optimiser; Adam is
the default here (plain GD at lr 0.01 barely moves a 3- or 4-layer net in 50-100 steps), `--optimizers gd`
runs plain full-batch gradient descent too. Every trained model is saved as a 'synthetic' checkpoint in
OUT/models/ (what hessian.py and the Fig. 2 report read); OUT/results.json holds every net's numbers.
The report (results/fig2.md, results/fig2_*.png) is built by `python -m scripts.fig2 OUT`.

    python synthetic.py --out runs/synthetic
    python synthetic.py --depths 2 --seeds 0 --iters 20 --out /tmp/syn
"""
import argparse
import os

from utils.cli import ArgumentParser, UsageError, run_cli
from utils.runio import RunDir, add_run_args, set_threads

# Paper App. A.4.2: 2, 3, 4-layer FCNs trained 1000, 100, 50 iterations.
DEPTH_ITERS = {2: 1000, 3: 100, 4: 50}
OPTIMIZERS = {"adam": "Adam", "gd": "SGD"}  # CLI name -> torch.optim class (plain SGD, full batch = GD)
DEFAULT_OUT = "runs/synthetic"


def make_optimizer(name, params, lr):
    import torch
    return getattr(torch.optim, OPTIMIZERS[name])(params, lr=lr)


def loss_fn(config):
    import losses
    return losses.get_loss(config["loss"], k=config["k"], m=config["m"])


def accuracy(model, X, y):
    return (model(X).argmax(1) == y).float().mean().item()


def mean_margin(model, X, y, lim=1.2, res=300):
    """Mean input-space distance from correctly classified points to the decision boundary.

    The boundary is approximated by the grid cells whose predicted class differs from a neighbour's.
    """
    import numpy as np
    import torch
    from scipy.spatial import cKDTree
    from utils.spiral import probability_grid
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


def train_one(config):
    """Train one net full batch; returns (model, record with accuracies, margin and the loss curve)."""
    import torch
    import utils.tv_compat  # noqa: F401  (before models/, which imports torchvision)
    from models.fcn import fcn_from_config
    from utils.spiral import spiral_data
    torch.manual_seed(config["seed"])
    X_tr, y_tr, X_te, y_te = spiral_data(config)
    model = fcn_from_config(config)
    opt = make_optimizer(config["optimizer"], model.parameters(), config["lr"])
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


def net_config(args, optimizer, depth, loss, seed):
    """What defines one net (and rebuilds it from its checkpoint). Each seed draws its own data and init."""
    return {"optimizer": optimizer, "depth": depth, "hidden": args.hidden, "loss": loss, "k": args.k,
            "m": args.m, "lr": args.lr, "iters": args.iters or DEPTH_ITERS.get(depth, 100), "seed": seed,
            "data_seed": seed, "n": args.n, "noise": args.noise, "train_frac": 0.7}


def run_grid(args, run):
    """Train every (optimizer, depth, loss, seed); save each model as a checkpoint; return the records."""
    from tqdm import tqdm
    from utils.checkpoint import save_checkpoint
    records, grid = [], [(o, d, l, s) for o in args.optimizers for d in args.depths
                         for l in args.losses for s in args.seeds]
    for opt, depth, loss, seed in tqdm(grid, desc="spiral nets"):
        config = net_config(args, opt, depth, loss, seed)
        model, record = train_one(config)
        path = run.file(os.path.join("models", f"{opt}_fc{depth}_{loss}_s{seed}.pt"))
        save_checkpoint(path, "synthetic", config, model=model.state_dict())
        records.append({**config, **record, "path": path})
        run.log({k: v for k, v in records[-1].items() if k != "curve"})
    return records


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", type=int, nargs="+", default=[2, 3, 4], help="number of linear layers (default: 2 3 4)")
    p.add_argument("--iters", type=int, default=None,
                   help="iterations for every depth (default: the paper's 1000 / 100 / 50 for 2 / 3 / 4 layers)")
    p.add_argument("--losses", nargs="+", default=["ce", "root"],
                   help="losses to compare, names of losses.py's registry (default: ce root)")
    p.add_argument("--rlo-loss", type=str, default="root",
                   help="which loss the report treats as RLO (default: root, the authors' code form)")
    p.add_argument("--optimizers", nargs="+", default=["adam"], choices=list(OPTIMIZERS),
                   help="full-batch optimiser(s); the paper does not say which (default: adam)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default: 0.01, the paper's)")
    p.add_argument("--k", type=float, default=3.0, help="RLO k (default: 3, the paper's)")
    p.add_argument("--m", type=float, default=3.0, help="RLO m of the code form (default: 3, the authors')")
    p.add_argument("--hidden", type=int, default=100, help="hidden width (default: 100, the paper's)")
    p.add_argument("--n", type=int, default=1500, help="number of spiral points (default: 1500, the paper's)")
    p.add_argument("--noise", type=float, default=0.05, help="std of the Gaussian jitter (default: 0.05)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                   help="seeds; each draws its own data, split and init (default: 0 1 2 3 4)")
    add_run_args(p, default_out=DEFAULT_OUT)
    p.add_argument("--out-dir", dest="out", help="the same as --out (the older name)")
    p.add_argument("--report", default=None,
                   help="ignored, kept so older command lines run: python -m scripts.fig2 OUT writes the report")
    p.add_argument("--fig-prefix", default=None, help="ignored, as --report (the report builder draws the figures)")
    p.set_defaults(threads=1)  # tiny nets: extra threads only contend on a shared machine
    args = p.parse_args(argv)
    _check_losses(p, args)
    return args


def _check_losses(parser, args):
    """Loss names against losses.py's registry, after parsing, so that -h never imports torch."""
    import losses
    for name in args.losses + [args.rlo_loss]:
        if name not in losses.LOSSES:
            parser.error(f"unknown loss {name!r}; choose from {', '.join(sorted(losses.LOSSES))}")


def check_args(args):
    if args.lr <= 0 or args.k <= 0 or args.m <= 0 or args.n < 10 or args.hidden < 1:
        raise UsageError("need --lr, --k, --m > 0, --n >= 10 and --hidden >= 1")
    if any(d < 2 for d in args.depths) or (args.iters is not None and args.iters < 1):
        raise UsageError("every --depths value must be >= 2 and --iters >= 1")
    if args.resume:
        raise UsageError("--resume: synthetic.py trains its nets in one go (minutes); rerun with --overwrite")


def main(args):
    check_args(args)
    if args.report or args.fig_prefix:
        print("note: --report/--fig-prefix are ignored; build the report with python -m scripts.fig2 OUT")
    set_threads(args.threads)
    config = {k: v for k, v in vars(args).items() if k not in ("report", "fig_prefix")}
    run = RunDir(args.out or DEFAULT_OUT, config, overwrite=args.overwrite)
    try:
        records = run_grid(args, run)
        return run.finish({"runs": records})
    finally:
        run.release()


if __name__ == "__main__":
    run_cli(main, parse_args())
