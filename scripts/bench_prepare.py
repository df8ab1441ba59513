"""How long `mmal-prepare` takes per 1,000 rows with the documented backbones, and so for the full datasets.

    python scripts/bench_prepare.py [--rows 96] [--device auto] [--precision fp32]

Builds raw trees in the published layouts with real-sized content (Food-101: JPEGs with sides of 384-512 px
and web-page-length texts, truncated to 128 tokens; CREMA-D: clips of 2-3 s with three 480 px frames each),
about ``--rows`` rows each, and random-initialised backbones of the documented architectures (ResNet-50 at
224 px, BERT-base, AST on 128 x 1,024 log-mel frames: random weights cost what trained weights cost), then
times each preparation: embeddings, and raw tensors (decoding and resizing alone). The rows of the full
datasets (UPMC Food-101: 87,817 pairs, mmbt's counts; CREMA-D: 7,442 clips) times the measured seconds per
row give the estimates: estimates, not measurements on the real files (real JPEGs of other sizes decode in
other times).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mmal.prepare import prepare  # noqa: E402
from mmal.prepare.fixtures import EMOTIONS, FOOD_CLASSES, cremad_tree, food101_tree, random_backbones  # noqa: E402

FULL_ROWS = {"food101": 87_817, "cremad": 7_442}  # mmbt (Kiela et al., 2019) train + dev + test; OGM-GE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=96, help="rows per dataset (about)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, device {device}, {args.precision}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = random_backbones(tmp / "models", full_size=True)
        per_class = max(2, round(args.rows * 0.75 / len(FOOD_CLASSES)))
        food101_tree(tmp / "food", train_per_class=per_class, test_per_class=max(1, per_class // 3),
                     image_sizes=(384, 513), text_words=120)
        cremad_tree(tmp / "crema", clips_per_emotion=max(2, args.rows // len(EMOTIONS)), split_files=True,
                    image_sizes=(480, 481),
                    seconds=(2.0, 3.0))
        runs = [("food101", "food", {"models": models}), ("food101", "food", {"raw": ["image"], "models": models}),
                ("cremad", "crema", {"models": models}), ("cremad", "crema", {"raw": ["audio", "visual"]})]
        print("| dataset | modalities | rows | seconds | s per 1,000 rows | full dataset (estimate) |")
        print("|---|---|---|---|---|---|")
        for i, (dataset, root, options) in enumerate(runs):
            start = time.perf_counter()
            manifest = prepare(dataset, tmp / root, tmp / f"out{i}", batch_size=args.batch_size, device=device,
                               precision=args.precision, progress=False, **options)
            seconds = time.perf_counter() - start
            rows = sum(s["rows"] for s in manifest["splits"].values())
            raw = options.get("raw", [])
            what = ", ".join(f"{m} {'raw ' + 'x'.join(map(str, a['shape'])) if m in raw else a['shape'][0]}"
                             for m, a in manifest["arrays"].items())
            per_row = seconds / rows
            full = per_row * FULL_ROWS[dataset]
            print(f"| {dataset} | {what} | {rows} | {seconds:.1f} | {1000 * per_row:.0f} | "
                  f"{full / 60:.0f} min ({FULL_ROWS[dataset]:,} rows) |", flush=True)
        print(json.dumps({"device": device, "precision": args.precision, "batch_size": args.batch_size}))


if __name__ == "__main__":
    main()
