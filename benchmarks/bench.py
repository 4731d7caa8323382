"""Side-by-side speed, memory and FLOPs of perceptual losses; writes ``benchmarks/RESULTS.md``.

Run everything with ``bash benchmarks/run.sh`` (see ``benchmarks/README.md``). Each
configuration runs in two fresh processes (``worker.py``): one for time (one warm-up call, then
the median of ``--repeats`` calls) and one for memory (RSS high-water mark of a call after the
first above the RSS before it, with glibc returning freed blocks at once so that RSS
follows live tensors) and FLOPs (``torch.utils.flop_counter.FlopCounterMode``).

Options: ``--quick`` (B=4 224x224 content only), ``--device cuda``, ``--dtype bf16``,
``--repeats N``, ``--only IMPL[,IMPL]``, ``--no-peers``, ``--out PATH``, ``--prototype`` (the
training-memory variants against the article, content only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_PYTHON = HERE / ".venv" / "bin" / "python"
PEERS = {"piq", "lpips", "dists", "piq-lpips", "piq-dists"}
SIZES = [(4, 224), (8, 256), (1, 512)]
#: Small images (super-resolution patches): the device rule chunks them differently.
SMALL_SIZES = [(16, 64), (16, 96)]

# What each implementation is, for the table.
DESCRIPTIONS = {
    "article": "the PyTorch article's VGGPerceptualLoss (4 slices, L1, no resize)",
    "ours": "PerceptualLoss() with its defaults: the device rule (on CPU channels_last, one "
            "sample at a time through the lean trunk for a training step, whole batch without "
            "gradient)",
    "ours-nchw": "PerceptualLoss(channels_last=False, chunk_size=None): the lean trunk in NCHW "
                 "on the whole batch (the defaults before the device rule)",
    "ours-cl": "PerceptualLoss, lean trunk, channels_last=True",
    "ours-plain": "PerceptualLoss(memory='plain'): ordinary autograd, NCHW, whole batch (the "
                  "exact choice)",
    "ours-bits": "PerceptualLoss, lean trunk with ReLU masks packed to bits",
    "ours-ckpt": "PerceptualLoss, plain autograd + activation checkpointing per block",
    "ours-compile": "torch.compile(PerceptualLoss()) (defaults), compiled in the warm-up call",
    "ours-nocheck": "PerceptualLoss(check_values=False): no value check, no device sync",
    "article-compile": "torch.compile(the article's class), compiled in the warm-up call",
    "ours-chunk1": "PerceptualLoss(chunk_size=1): the backbone runs one sample at a time",
    "ours-chunk1-cl": "PerceptualLoss(chunk_size=1), channels_last=True",
    "ours-lpips": "perceptual_loss.LPIPS(net='vgg') with its defaults (relu1_2..relu5_3, heads)",
    "ours-lpips-nchw": "the same with the extractor's channels_last=False",
    "ours-dists": "perceptual_loss.DISTS() with its defaults",
    "piq": "piq.ContentLoss (+ piq.StyleLoss for style), vgg16, same layers, L1",
    "lpips": "lpips.LPIPS(net='vgg'), relu1_2..relu5_3, heads",
    "dists": "DISTS_pytorch.DISTS (VGG16 with L2 pooling, relu1_2..relu5_3)",
    "piq-lpips": "piq.LPIPS (VGG16, relu1_2..relu5_3; stand-in heads: piq downloads them)",
    "piq-dists": "piq.DISTS (VGG16 with L2 pooling; stand-in alpha/beta: piq downloads them)",
}


def gpu_plan(peers: bool) -> list[dict]:
    """The few configurations the GPU check times (it must finish in minutes)."""
    configs = []
    for batch, size in SIZES[:2]:
        for style in (False, True):
            for impl in ("article", "ours"):
                configs.append({"impl": impl, "mode": "train", "batch": batch, "size": size,
                                "style": style})
    batch, size = SIZES[0]
    # The value checks' device synchronisation, and torch.compile (warm-up timed apart)
    configs.append({"impl": "ours-nocheck", "mode": "train", "batch": batch, "size": size,
                    "style": False})
    for impl in ("article-compile", "ours-compile"):
        configs.append({"impl": impl, "mode": "train", "batch": batch, "size": size,
                        "style": False})
    for impl in ("ours", "piq", "ours-lpips", "lpips", "ours-dists", "dists"):
        if impl in PEERS and not peers:
            continue
        configs.append({"impl": impl, "mode": "metric", "batch": batch, "size": size,
                        "style": False})
    return configs


def plan(quick: bool, peers: bool, prototype: bool = False) -> list[dict]:
    """The configurations: (impl, mode, batch, size, style)."""
    configs: list[dict] = []
    if prototype:  # training memory variants against the article, content only
        return [{"impl": impl, "mode": "train", "batch": batch, "size": size, "style": False}
                for batch, size in (SIZES[:1] if quick else SIZES)
                for impl in ("article", "ours", "ours-cl", "ours-chunk1", "ours-chunk1-cl")]

    def add(impl: str, mode: str, batch: int, size: int, style: bool) -> None:
        if impl in PEERS and not peers:
            return
        configs.append({"impl": impl, "mode": mode, "batch": batch, "size": size,
                        "style": style})

    sizes = SIZES[:1] if quick else SIZES
    for batch, size in sizes:
        for style in ((False,) if quick else (False, True)):
            for impl in ("article", "ours", "ours-nchw"):
                add(impl, "train", batch, size, style)
            for impl in ("ours", "piq"):
                add(impl, "metric", batch, size, style)
    for batch, size in (SIZES[0],) if quick else (SIZES[0], SIZES[2]):
        for impl in ("ours-lpips", "lpips", "piq-lpips"):
            add(impl, "metric", batch, size, False)
    if not quick:
        for batch, size in SMALL_SIZES:
            for impl in ("article", "ours"):
                add(impl, "train", batch, size, False)
    if not quick:  # exact-halo tiles: the memory of a large image, at a price in time
        batch, size = SIZES[2]
        add("ours-tiles256", "train", batch, size, False)
    batch, size = SIZES[0]
    add("ours-plain", "train", batch, size, False)
    for impl in ("article", "ours-dists", "dists", "piq-dists"):
        add(impl, "metric", batch, size, False)
    if not quick:
        add("ours-lpips-nchw", "metric", batch, size, False)
        add("ours-nchw", "metric", batch, size, False)
    return configs


def run_worker(cfg: dict, timeout: float, peers_python: str | None = None) -> dict:
    python = (peers_python or str(VENV_PYTHON)) if cfg.get("impl") in PEERS else sys.executable
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(HERE)])
    if cfg["phase"] == "memory":
        # Every block of 64 KiB or more is mmapped and given back when freed, so RSS follows
        # live tensors (this slows allocation down, hence a separate process for time).
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
        env["MALLOC_TRIM_THRESHOLD_"] = "0"
    try:
        proc = subprocess.run([python, str(HERE / "worker.py"), json.dumps(cfg)], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"cfg": cfg, "error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"cfg": cfg, "error": " | ".join(tail) or f"exit code {proc.returncode}"}


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
            "cpu": platform.processor()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                       .splitlines() if line.startswith("MemTotal"))
        info["memory_gib"] = round(mem_kib / 2**20, 1)
    except (OSError, StopIteration):
        pass
    if VENV_PYTHON.exists():
        code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import peers; "
                "print(json.dumps(peers.versions()))")
        out = subprocess.run([str(VENV_PYTHON), "-c", code],
                             capture_output=True, text=True, check=False)
        if out.returncode == 0:
            info.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return info


def uptime() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[:3].__str__()
    except OSError:
        return "n/a"


def _label(cfg: dict) -> str:
    """One configuration in a progress line, e.g. ``ours  train B=4 224 style=False``."""
    return (f"{cfg['impl']:>12} {cfg['mode']:>6} B={cfg['batch']} {cfg['size']} "
            f"style={cfg['style']}{' compiled' if cfg.get('compile') else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--prototype", action="store_true",
                        help="only the training-memory variants (content) against the article")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--passes", type=int, default=2,
                        help="CPU: time every configuration in this many fresh processes, in "
                             "passes through the plan that alternate direction; its time is "
                             "the median of all its timed calls")
    parser.add_argument("--only", default="")
    parser.add_argument("--sizes", default="",
                        help="only these batch x size, e.g. 4x224,8x256")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--gpu", action="store_true",
                        help="the GPU check's short plan, one process per configuration")
    parser.add_argument("--peers-python", default=None,
                        help="the Python that imports lpips/piq/DISTS_pytorch (default: "
                             "benchmarks/.venv)")
    args = parser.parse_args()

    peers_python = args.peers_python
    peers = not args.no_peers and (peers_python is not None or VENV_PYTHON.exists())
    if not args.no_peers and not peers:
        print(f"note: {VENV_PYTHON} missing, peers skipped (bash benchmarks/run.sh makes it)")
    configs = gpu_plan(peers) if args.gpu else plan(args.quick, peers, args.prototype)
    if args.only:
        wanted = set(args.only.split(","))
        configs = [c for c in configs if c["impl"] in wanted]
    if args.sizes:
        sizes = {tuple(int(v) for v in item.split("x")) for item in args.sizes.split(",")}
        configs = [c for c in configs if (c["batch"], c["size"]) in sizes]
    passes = 1 if args.device.startswith("cuda") else max(1, args.passes)
    common = {"device": args.device, "dtype": args.dtype, "repeats": args.repeats}
    started = time.time()
    load_before = uptime()
    calibration = run_worker({"phase": "calibrate", **common}, args.timeout, peers_python)
    print("conv throughput:", json.dumps(calibration.get("conv3x3_flops_per_s")), flush=True)
    results = []
    for i, cfg in enumerate(configs, 1):
        cfg = {**cfg, **common}
        if args.device.startswith("cuda"):
            timed = memory = run_worker({**cfg, "phase": "both"}, args.timeout, peers_python)
        else:
            timed = run_worker({**cfg, "phase": "time"}, args.timeout, peers_python)
            memory = run_worker({**cfg, "phase": "memory"}, args.timeout, peers_python)
        row = {**cfg, "median_s": timed.get("median_s"), "times": timed.get("times"),
               "pass_medians": [timed.get("median_s")],
               "peak_bytes": memory.get("peak_bytes"), "flops": memory.get("flops"),
               "error": timed.get("error") or memory.get("error")}
        results.append(row)
        print(f"[{i}/{len(configs)}] {_label(cfg)}: {row['median_s']} s, "
              f"{(row['peak_bytes'] or 0) / 2**20:.0f} MiB, {row['error'] or ''}", flush=True)
    for number in range(2, passes + 1):  # time only, every other pass backwards
        order = results[::-1] if number % 2 == 0 else results
        for row in order:
            cfg = {k: row[k] for k in ("impl", "mode", "batch", "size", "style", *common)}
            timed = run_worker({**cfg, "phase": "time"}, args.timeout, peers_python)
            row["pass_medians"].append(timed.get("median_s"))
            row["times"] = (row["times"] or []) + (timed.get("times") or [])
            row["error"] = row["error"] or timed.get("error")
            # The median of every timed call of every pass: the article's time varies between
            # fresh processes by itself (page faults depend on where glibc's heap ends up), so
            # the lowest per-process median would pick its lucky process.
            row["median_s"] = statistics.median(row["times"]) if row["times"] else None
            print(f"[pass {number}] {_label(cfg)}: {timed.get('median_s')} s "
                  f"{timed.get('error') or ''}", flush=True)
    # Calibrate again at the end; the better figure is the machine's (the host is shared).
    again = run_worker({"phase": "calibrate", **common}, args.timeout, peers_python)
    if again.get("best", 0) > calibration.get("best", 0):
        calibration = again
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started),
        "load_before": load_before, "load_after": uptime(),
        "machine": machine(), "calibration": calibration,
        "settings": {**common, "passes": passes},
        "results": results,
    }
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out_dir / f"results-{stamp}.json").write_text(json.dumps(report, indent=1))
    from report import write_results

    write_results(report, Path(args.out))
    print(f"wrote {args.out} and {out_dir / f'results-{stamp}.json'}")


if __name__ == "__main__":
    main()
