"""Issue 13's evidence: Encoder and a grid of `hardened` configurations at celeba-cpu, judged by fresh attackers.

Every configuration is trained with `deepobf baseline NAME` (Smiling intended, Male private, the shared CelebA)
and attacked with `deepobf attack` (learned attackers stop early on their own validation loss; `--attr-epochs` /
`--recon-epochs` only cap them; the suite sends every image twice, finds the pipeline stochastic and also attacks
repeated queries averaged over m = 8 draws, the "m=8" column); on top of the suite, a fresh linear probe
on the *flattened* features and a small CNN are trained with a fresh noise draw per epoch on every train-split
image and scored on the test split (`training.audit.audit_leakage`, "flat" column), because the suite's
linear attacker only sees globally pooled features. Finished steps are skipped on rerun.

    OMP_NUM_THREADS=1 python benchmarks/hardened_celeba_cpu.py --out runs/hardened-celeba-cpu
    python benchmarks/hardened_celeba_cpu.py --out runs/hardened-celeba-cpu --table-only --figure front.png \
        --reference dobf10=runs/dobf10     # any attacked run of another method, drawn beside

Attack budget per configuration: the attribute attackers (vgg, resnet, linear, mlp, the oracle floor) on every
train-split image, epoch cap 60, early stopping; then the decoders (mirror, urec1, resrec, inversion refining
the best, and the image floors) into RUN/recon/attack.json, epoch cap 20 on a seeded 3200-image subset, with
re-identification over 400 queries.

Label floor: the best balanced accuracy of predicting Male from the Smiling label alone, on the test split.
Goal (issue 13): Smiling within 3 points of the Encoder, best Male balanced accuracy <= 0.60, best MS-SSIM
within 0.05 of the best constant image (~0.40 at 64 px), re-ID of the same image <= 0.40.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from deepobfuscator.attacks.features import obfuscate
from deepobfuscator.methods import load_trained
from deepobfuscator.methods.hardened import LEGACY_DEFAULTS
from deepobfuscator.metrics import balanced_accuracy
from deepobfuscator.runs import RunDir, open_run_data
from deepobfuscator.training.audit import AuditSettings, audit_leakage

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "celeba"

# name -> (method, --set overrides)
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "encoder": ("encoder", []),
    # the Encoder's Smiling varies by run: another run seed, and another split of the images (with run seed 1)
    "encoder-seed1": ("encoder", ["train.epochs_attacker=0"]),
    "encoder-split1": ("encoder", ["data.split_seed=1", "train.epochs_attacker=0"]),
    "h-k1-s1-capacity": ("hardened", ["baseline.mu=0", "baseline.adversaries=[]"]),
    "h-k1-s1-dcor1": ("hardened", ["baseline.mu=1", "baseline.adversaries=[]"]),
    "h-k1-s1-dcor1-ens": ("hardened", ["baseline.mu=1"]),
    "h-k1-s1-ens": ("hardened", ["baseline.mu=0"]),
    "h-k1-s1-dcor1-ens2": ("hardened", ["baseline.mu=1", "train.epochs_adversarial=2"]),
    "h-k2-s1-dcor1": ("hardened", ["model.bottleneck_channels=2", "baseline.mu=1", "baseline.adversaries=[]"]),
    "h-k1-s1-dcor3": ("hardened", ["baseline.mu=3", "baseline.adversaries=[]"]),
    "h-k1-s1-hsic1": ("hardened", ["baseline.mu=1", "baseline.dependence=hsic", "baseline.adversaries=[]"]),
    "h-k1-s07-dcor1": ("hardened", ["model.bottleneck_sigma=0.7", "baseline.mu=1", "baseline.adversaries=[]"]),
}
# warm-started from the Encoder run of the same --out ({encoder}): the 1-channel noisy bottleneck trained from a cold
# O stays near chance for its first epochs (measured: Smiling 0.69 after 4 epochs, Encoder 0.84)
WARM = ["baseline.init_from={encoder}", "baseline.aux_epochs=0", "train.epochs_attacker=1"]
IMG_RAMP = ["baseline.image_ramp_epochs=3", "train.epochs_pretrain=7"]
CONFIGS.update({
    "hw-k1-s1-capacity": ("hardened", WARM + ["baseline.mu=0", "baseline.adversaries=[]"]),
    "hw-k1-s1-dcor1": ("hardened", WARM + ["baseline.mu=1", "baseline.adversaries=[]"]),
    "hw-k1-s1-dcor3": ("hardened", WARM + ["baseline.mu=3", "baseline.adversaries=[]"]),
    "hw-k1-s1-dcor03": ("hardened", WARM + ["baseline.mu=0.3", "baseline.adversaries=[]"]),
    "hw-k1-s125-dcor1": ("hardened", WARM + ["model.bottleneck_sigma=1.25", "baseline.mu=1", "baseline.adversaries=[]"]),
    "hw-k1-s15-dcor1": ("hardened", WARM + ["model.bottleneck_sigma=1.5", "baseline.mu=1", "baseline.adversaries=[]"]),
    "hw-k1-s1-dcor1-ens2": ("hardened", WARM + ["baseline.mu=1", "train.epochs_adversarial=2"]),
    "hw-k2-s1-dcor1": ("hardened", WARM + ["model.bottleneck_channels=2", "baseline.mu=1", "baseline.adversaries=[]"]),
    # the image term: within-class dependence of the sent mean on the 16x16 image (reconstruction, re-ID, m=8)
    "hw-k1-s1-dcor1-img1": ("hardened", WARM + ["baseline.mu=1", "baseline.mu_image=1", "baseline.adversaries=[]"]),
    # ... ramped in over 3 epochs (without the ramp a cold bottleneck never learns Smiling: 0.66 after 4 epochs)
    "hw-k1-s1-dcor1-img03r": ("hardened", WARM + IMG_RAMP + ["baseline.mu=1", "baseline.mu_image=0.3",
                                                             "baseline.adversaries=[]"]),
    "hw-k1-s1-dcor1-img1r": ("hardened", WARM + IMG_RAMP + ["baseline.mu=1", "baseline.mu_image=1",
                                                            "baseline.adversaries=[]"]),
    "hw-k1-s1-dcor1-img3r": ("hardened", WARM + IMG_RAMP + ["baseline.mu=1", "baseline.mu_image=3",
                                                            "baseline.adversaries=[]"]),
    # a stronger Male term, ramped like the image term (unramped mu=3 never learned Smiling: 0.66 after 4 epochs)
    "hw-k1-s1-dcor3r-img1r": ("hardened", WARM + IMG_RAMP + ["baseline.mu=3", "baseline.mu_ramp_epochs=3",
                                                             "baseline.mu_image=1", "baseline.adversaries=[]"]),
    # a better dependence estimate: twice the images per intended class in a batch; the kernel measure
    "hw-k1-s1-dcor2r-img1r-b128": ("hardened", WARM + IMG_RAMP + ["train.batch_size=128", "baseline.mu=2",
                                                                  "baseline.mu_ramp_epochs=3", "baseline.mu_image=1",
                                                                  "baseline.adversaries=[]"]),
    "hw-k1-s1-hsic2r-img1r": ("hardened", WARM + IMG_RAMP + ["baseline.dependence=hsic", "baseline.mu=2",
                                                             "baseline.mu_ramp_epochs=3", "baseline.mu_image=1",
                                                             "baseline.adversaries=[]"]),
    # the adversarial last step on top: 2 epochs against the restarted vgg/resnet/mlp ensemble, a light lambda1
    "hw-k1-s1-dcor1-img1r-ens01": ("hardened", WARM + IMG_RAMP + ["baseline.mu=1", "baseline.mu_image=1",
                                                                  "train.epochs_adversarial=2", "privacy.lambda1=0.1",
                                                                  "privacy.lambda2=0"]),
    # the noise curriculum (the ens01 start above stayed at chance for six epochs under the full noise)
    "hw-k1-s1-dcor1-img1r-sr3": ("hardened", WARM + IMG_RAMP + ["baseline.mu=1", "baseline.mu_image=1",
                                                                "baseline.sigma_ramp_epochs=3", "baseline.adversaries=[]"]),
    "hw-k1-s1-dcor1-img1r-ens01-sr3": ("hardened", WARM + IMG_RAMP + ["baseline.mu=1", "baseline.mu_image=1",
                                                                      "baseline.sigma_ramp_epochs=3",
                                                                      "train.epochs_adversarial=2", "privacy.lambda1=0.1",
                                                                      "privacy.lambda2=0"]),
    "hw-k1-s1-dcor10r-img1r": ("hardened", WARM + IMG_RAMP + ["baseline.mu=10", "baseline.mu_ramp_epochs=3",
                                                              "baseline.mu_image=1", "baseline.adversaries=[]"]),
})


def legacy(overrides: list[str]) -> list[str]:
    """The overrides of a config measured before the recipe became hardened's defaults: the old defaults written
    out (later overrides win), and no adversarial stage where there are no adversaries (today's configure would
    move celeba-cpu's 6 adversarial epochs into stage 1)."""
    old = [f"baseline.{k}={json.dumps(v).replace(' ', '') if isinstance(v, list) else v}"
           for k, v in LEGACY_DEFAULTS.items()]
    stage3 = [] if any(o.startswith("train.epochs_adversarial=") for o in overrides) else ["train.epochs_adversarial=0"]
    return old + (stage3 if "baseline.adversaries=[]" in overrides else []) + overrides


CONFIGS = {name: (method, legacy(o) if method == "hardened" else o) for name, (method, o) in CONFIGS.items()}
# configs trained from the celeba-cpu-hardened preset (the others start from celeba-cpu)
PRESETS = {name: "celeba-cpu-hardened" for name in ("preset-celeba-cpu-hardened", "preset-celeba-cpu-hardened-split1",
                                                     "preset-celeba-cpu-hardened-seed1", "nospread-sr3", "nospread",
                                                     "nospread-split1", "spread-only", "spread3", "preset-mu2",
                                                     "preset-mu3")}
# the preset as shipped (spread term and noise curriculum), on the seed-0 split and on another split of the images
# with another run seed: nothing tuned to one split
CONFIGS["preset-celeba-cpu-hardened"] = ("hardened", [])
CONFIGS["preset-celeba-cpu-hardened-split1"] = ("hardened", ["data.split_seed=1"])
CONFIGS["preset-celeba-cpu-hardened-seed1"] = ("hardened", [])  # the seed-0 split, run seed 1
# the preset of the previous stop (no spread term), with its noise curriculum; and the two runs measured before the
# curriculum joined it
CONFIGS["nospread-sr3"] = ("hardened", ["baseline.mu_spread=0"])
CONFIGS["nospread"] = ("hardened", ["baseline.mu_spread=0", "baseline.sigma_ramp_epochs=0"])
CONFIGS["nospread-split1"] = ("hardened", ["data.split_seed=1", "baseline.mu_spread=0", "baseline.sigma_ramp_epochs=0"])
# the spread term alone (no Male or image term), and three times stronger
CONFIGS["spread-only"] = ("hardened", ["baseline.mu=0", "baseline.mu_image=0"])
CONFIGS["spread3"] = ("hardened", ["baseline.mu_spread=3"])
# a stronger Male term on top (ramped): what repeated queries (m=8, the noise-free mean) still read
CONFIGS["preset-mu2"] = ("hardened", ["baseline.mu=2", "baseline.mu_ramp_epochs=3"])
CONFIGS["preset-mu3"] = ("hardened", ["baseline.mu=3", "baseline.mu_ramp_epochs=3"])
# run seeds other than --seed (the split1 runs also use another split of the images)
SEEDS = {"encoder-seed1": 1, "encoder-split1": 1, "preset-celeba-cpu-hardened-split1": 1, "nospread-split1": 1,
         "preset-celeba-cpu-hardened-seed1": 1}
DEFAULT = ["encoder", "encoder-split1", "preset-celeba-cpu-hardened", "preset-celeba-cpu-hardened-split1"]


def run(cmd: list[str], log: Path) -> None:
    """Run ``cmd``, appending its output to ``log``; raise on failure."""
    with open(log, "a") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n")
        handle.flush()
        subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, check=True)


def train(name: str, out: Path, data: Path, threads: int, seed: int, log: Path) -> float:
    """Train configuration ``name`` into ``out`` unless finished; return its training wall seconds."""
    stamp = out / "bench_train_seconds.json"
    if (out / "train_summary.json").is_file() and stamp.is_file():
        return json.loads(stamp.read_text())["seconds"]
    method, overrides = CONFIGS[name]
    cmd = ["deepobf", "baseline", method, "--preset", PRESETS.get(name, "celeba-cpu"), "--data", str(data), "--task", "Smiling",
           "--private", "Male", "--out", str(out), "--seed", str(seed), "--no-progress",
           "--set", f"train.threads={threads}"]
    encoder = out.parent / "encoder"
    if any("{encoder}" in o for o in overrides) and not (encoder / "checkpoints" / "final.safetensors").is_file():
        raise SystemExit(f"{name} starts from the Encoder: train 'encoder' into {encoder} first (list it earlier)")
    cmd += [x for o in overrides for x in ("--set", o.replace("{encoder}", str(encoder.resolve())))]
    if (out / "config.yaml").is_file():
        cmd.append("--resume")
    started = time.perf_counter()
    run(cmd, log)
    seconds = time.perf_counter() - started
    stamp.write_text(json.dumps({"seconds": seconds}))
    return seconds


ATTRIBUTE_ATTACKERS = "vgg,resnet,linear,mlp,oracle,constant,mean_face,median_face"
DECODERS = "constant,mean_face,median_face,mirror,urec1,resrec,inversion"


def attack(out: Path, threads: int, attackers: str, attr_epochs: int | None, log: Path) -> None:
    """`deepobf attack` with the attribute attackers on every train-split image (and the image floors), unless
    attack.json exists; early stopping below the epoch cap."""
    if (out / "attack.json").is_file():
        return
    caps = ["--attr-epochs", str(attr_epochs)] if attr_epochs else []
    run(["deepobf", "attack", str(out), "--no-progress", "--threads", str(threads), "--attackers", attackers, *caps], log)


def attack_decoders(out: Path, threads: int, decoders: str, epochs: int, images: int, reid_images: int,
                    log: Path) -> None:
    """A second `deepobf attack` with the decoders (and re-identification) into RUN/recon/attack.json: at most
    ``epochs`` epochs (early stopping below) on a seeded subset of ``images`` train-split images (decoders on
    2 shared cores cost about 20 minutes each on all 6400), ``reid_images`` re-identification queries."""
    if (out / "recon" / "attack.json").is_file():
        return
    run(["deepobf", "attack", str(out), "--out", str(out / "recon" / "attack.json"), "--attackers", decoders,
         "--recon-epochs", str(epochs), "--max-train-images", str(images), "--reid-images", str(reid_images),
         "--inversion-steps", "400", "--threads", str(threads), "--no-progress"], log)


def flat_audit(out: Path, epochs: int) -> dict:
    """Fresh flat-linear and small-CNN attackers (fresh noise per epoch, all train images) scored on test."""
    path = out / "bench_flat_audit.json"
    if path.is_file():
        return json.loads(path.read_text())
    rd = RunDir(out)
    cfg, modules = load_trained(rd)
    data, _ = open_run_data(rd, cfg, progress=False)
    settings = AuditSettings(train_images=len(data.split["train"]), val_images=len(data.split["test"]), epochs=epochs,
                             eval_split="test", seed=0)
    result = audit_leakage(lambda x: obfuscate(cfg, modules, x), data, data.private_specs, settings)
    path.write_text(json.dumps(result, indent=1))
    return result


def label_floor(out: Path) -> float:
    """Best balanced accuracy of predicting Male from Smiling alone on the run's test split."""
    data, _ = open_run_data(RunDir(out), progress=False)
    idx = data.split["test"]
    task, private = data.task[idx, 0], data.private[idx, 0]
    best = 0.0
    for mapping in itertools.product([0, 1], repeat=2):
        best = max(best, balanced_accuracy(private, np.asarray(mapping)[task]))
    return best


def row(name: str, out: Path) -> dict:
    """One table row from a finished run's files."""
    summary = json.loads((out / "train_summary.json").read_text())
    att = json.loads((out / "attack.json").read_text()) if (out / "attack.json").is_file() else None
    flat = json.loads((out / "bench_flat_audit.json").read_text()) if (out / "bench_flat_audit.json").is_file() else None
    stamp = out / "bench_train_seconds.json"
    seconds = json.loads(stamp.read_text())["seconds"] if stamp.is_file() else None
    sel = out / "audit_selection.json"
    r = {"name": name, "method": summary.get("method"), "smiling": summary["test"]["C_acc"]["Smiling"],
         "smiling_majority": summary["majority_rate"]["Smiling"],
         "train_s": seconds, "selected": json.loads(sel.read_text())["selected"] if sel.is_file() else None}
    if att:
        male = att["privacy"]["Male"]
        r.update(smiling_attack=att["utility"]["Smiling"]["accuracy"],
                 smiling_ci=att["utility"]["Smiling"]["accuracy_ci95"], male_bacc=male["balanced_accuracy"],
                 oracle_floor=(male.get("oracle_floor") or {}).get("balanced_accuracy"),
                 label_floor=(male.get("label_floor") or {}).get("balanced_accuracy"),
                 male_ci=male["balanced_accuracy_ci95"], male_best=male["best_attacker"],
                 male_majority=male["majority_rate"], msssim=att["reconstruction"]["ms_ssim"],
                 msssim_ci=att["reconstruction"].get("ms_ssim_ci95"), msssim_best=att["reconstruction"]["best_attacker"],
                 msssim_floor=(att["reconstruction"].get("floor") or {}).get("ms_ssim"),
                 reid=(att.get("reid") or {}).get("same_image"),
                 male_m8=((att.get("repeated") or {}).get("8", {}).get("privacy", {}).get("Male") or {}).get(
                     "balanced_accuracy"))
        m8 = out / "m8" / "attack.json"  # a repeated-query attack run on its own (`--repeat 1,8 --out RUN/m8/...`)
        if r["male_m8"] is None and m8.is_file():
            r["male_m8"] = ((json.loads(m8.read_text()).get("repeated") or {}).get("8", {}).get("privacy", {})
                            .get("Male") or {}).get("balanced_accuracy")
        recon = out / "recon" / "attack.json"
        if recon.is_file():  # the extra decoders: keep the best reconstruction and re-identification
            extra = json.loads(recon.read_text())
            rec = extra["reconstruction"]
            if r["msssim"] is None or (rec["ms_ssim"] or 0.0) > r["msssim"]:
                r.update(msssim=rec["ms_ssim"], msssim_best=rec["best_attacker"], msssim_ci=rec.get("ms_ssim_ci95"))
            r["msssim_floor"] = max(r.get("msssim_floor") or 0.0, (rec.get("floor") or {}).get("ms_ssim") or 0.0) or None
            r["reid"] = max(r["reid"] or 0.0, (extra.get("reid") or {}).get("same_image") or 0.0)
            r["reid_n"] = (extra.get("reid") or {}).get("same_image_n")
            r["msssim_m8"] = ((extra.get("repeated") or {}).get("8", {}).get("reconstruction") or {}).get("ms_ssim")
    if flat:
        r["flat"] = {k: flat[k]["Male"] for k in ("linear", "cnn")}
    return r


def format_table(rows: list[dict], floor: float | None) -> str:
    """Markdown table of the rows."""
    lines = [f"Label floor (Male from Smiling alone, test split of the first run): {floor:.3f}" if floor is not None
             else "",
             "Best constant image MS-SSIM: ~0.40 at 64 px (issue 12); re-ID chance 0.25",
             "train s: wall seconds on 2 shared cores; hw-* runs start from the Encoder's O, whose time is not included",
             "m=8: the best attacker on features averaged over 8 draws per image (repeated queries): Male / MS-SSIM",
             "",
             "| config | Smiling acc (majority) | best Male bal. acc [95% CI] (attacker; majority; label/oracle floor) | m=8 | flat linear / "
             "CNN (fresh draws) | best MS-SSIM [95% CI] (attacker; floor) | re-ID same image (queries) | train s | "
             "audit choice (val leakage) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        floors = "/".join("-" if r.get(k) is None else f"{r[k]:.3f}" for k in ("label_floor", "oracle_floor"))
        male = (f"{r['male_bacc']:.3f} [{r['male_ci'][0]:.3f}, {r['male_ci'][1]:.3f}] ({r['male_best']}; "
                f"{r['male_majority']:.3f}; {floors})" if "male_bacc" in r else "not attacked")
        flat = f"{r['flat']['linear']:.3f} / {r['flat']['cnn']:.3f}" if "flat" in r else "-"
        ci = r.get("msssim_ci") or [float("nan")] * 2
        mfloor = "-" if r.get("msssim_floor") is None else f"{r['msssim_floor']:.3f}"
        ms = (f"{r['msssim']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] ({r['msssim_best']}; {mfloor})"
              if r.get("msssim") is not None else "-")
        reid = f"{r['reid']:.3f} ({r.get('reid_n') or 100})" if r.get("reid") is not None else "-"
        m8 = " / ".join("-" if r.get(k) is None else f"{r[k]:.3f}" for k in ("male_m8", "msssim_m8"))
        secs = "-" if r.get("train_s") is None else f"{r['train_s']:.0f}"
        sel = (f"{r['selected']['stage']} {r['selected']['epoch']} ({r['selected']['leakage']:.3f})"
               if r.get("selected") else "-")
        lines.append(f"| {r['name']} | {r['smiling']:.3f} ({r['smiling_majority']:.3f}) | {male} | {m8} | {flat} | {ms} | "
                     f"{reid} | {secs} | {sel} |")
    return "\n".join(lines)


def draw_front(rows: list[dict], floor: float | None, path: Path) -> None:
    """Smiling accuracy against the best fresh Male attacker and against the best MS-SSIM, 95% intervals, floors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for r in rows:
        hardened = r.get("method") == "hardened"  # from the run's train_summary.json
        style = dict(fmt="*" if hardened else "o", ms=9 if hardened else 7, capsize=2, elinewidth=0.8,
                     color="tab:red" if hardened else "tab:gray")
        sx = r.get("smiling_attack", r["smiling"])
        xerr = None if not r.get("smiling_ci") else [[sx - r["smiling_ci"][0]], [r["smiling_ci"][1] - sx]]
        for ax, key, ci in ((axes[0], "male_bacc", "male_ci"), (axes[1], "msssim", "msssim_ci")):
            if r.get(key) is None:
                continue
            yerr = None if not r.get(ci) else [[r[key] - r[ci][0]], [r[ci][1] - r[key]]]
            ax.errorbar(sx, r[key], xerr=xerr, yerr=yerr, **style)
            ax.annotate(r["name"], (sx, r[key]), textcoords="offset points", xytext=(4, 4), fontsize=6)
    if floor is not None:
        axes[0].axhline(floor, color="tab:olive", ls="-.", lw=1, label=f"label floor ({floor:.3f})")
    oracles = [r["oracle_floor"] for r in rows if r.get("oracle_floor") is not None]
    if oracles:
        axes[0].axhline(float(np.median(oracles)), color="tab:purple", ls=":", lw=1,
                        label=f"oracle floor (median over runs, {float(np.median(oracles)):.3f})")
    axes[0].axhline(0.60, color="tab:green", ls="--", lw=0.8, label="goal: <= 0.60")
    floors = [r["msssim_floor"] for r in rows if r.get("msssim_floor")]
    if floors:
        level = float(np.median(floors))
        axes[1].axhline(level, color="tab:olive", ls="-.", lw=1, label=f"best constant image ({level:.3f})")
        axes[1].axhline(level + 0.05, color="tab:green", ls="--", lw=0.8, label="goal: floor + 0.05")
    encoder = next((r for r in rows if r["name"] == "encoder"), None)
    for ax, ylabel in ((axes[0], "best fresh attacker's Male balanced accuracy"), (axes[1], "best fresh decoder's MS-SSIM")):
        if encoder is not None:
            ax.axvline(encoder["smiling"] - 0.03, color="grey", lw=0.8, label="Encoder's Smiling - 3 points")
        ax.set_xlabel("Smiling accuracy (test split, 95% interval)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("Utility vs attribute inference (better: right, down)")
    axes[1].set_title("Utility vs reconstruction (better: right, down)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Train, attack, tabulate, draw."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=Path("runs/hardened-celeba-cpu"))
    p.add_argument("--configs", default=",".join(DEFAULT), help=f"comma-separated subset of {', '.join(CONFIGS)}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attackers", default=ATTRIBUTE_ATTACKERS, help="attribute attackers (and floors), every image")
    p.add_argument("--attr-epochs", type=int, help="cap on attribute attackers' epochs (default: the suite's)")
    p.add_argument("--decoders", default=DECODERS, help="reconstruction attackers (and floors), into RUN/recon/")
    p.add_argument("--recon-epochs", type=int, default=20, help="cap on the decoders' epochs")
    p.add_argument("--recon-images", type=int, default=3200, help="train-split images the decoders train on")
    p.add_argument("--reid-images", type=int, default=400, help="re-identification queries")
    p.add_argument("--flat-epochs", type=int, default=8)
    p.add_argument("--reference", action="append", default=[], metavar="NAME=RUN",
                   help="an attacked run of another method to tabulate and draw beside (repeatable)")
    p.add_argument("--figure", type=Path, help="where to draw the front (PNG)")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "bench.log"
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; known: {', '.join(CONFIGS)}")
    rows = []
    for ref in args.reference:
        name, _, path = ref.partition("=")
        if not path or not (Path(path) / "attack.json").is_file():
            p.error(f"--reference {ref!r}: expected NAME=RUN with RUN/attack.json")
        rows.append(row(name, Path(path)))
    for name in names:
        out = args.out / name
        if not args.table_only:
            print(f"[{time.strftime('%H:%M:%S')}] {name}: train", flush=True)
            train(name, out, args.data, args.threads, SEEDS.get(name, args.seed), log)
            print(f"[{time.strftime('%H:%M:%S')}] {name}: attack", flush=True)
            attack(out, args.threads, args.attackers, args.attr_epochs, log)
            attack_decoders(out, args.threads, args.decoders, args.recon_epochs, args.recon_images, args.reid_images, log)
            flat_audit(out, args.flat_epochs)
        if (out / "train_summary.json").is_file():
            rows.append(row(name, out))
            print(format_table(rows[-1:], None).splitlines()[-1], flush=True)
    runs = [args.out / n for n in names if (args.out / n / "train_summary.json").is_file()]
    floor = label_floor(runs[0]) if runs else None
    print(format_table(rows, floor))
    if args.figure and rows:
        draw_front(rows, floor, args.figure)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
