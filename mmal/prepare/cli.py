"""The command line of ``mmal-prepare`` (also ``python -m mmal.prepare``); docs/datasets.md has examples."""

from __future__ import annotations

import argparse
import os
import sys

from mmal.errors import ConfigError
from mmal.prepare.layouts import LAYOUTS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="mmal-prepare", description="Prepare a real multimodal dataset from its published layout: frozen "
        "embeddings of local backbones (or raw tensors) in the layout `dataset=features` reads, with a manifest.")
    parser.add_argument("dataset", help=" | ".join(LAYOUTS))
    parser.add_argument("--root", required=True, help="the raw dataset folder, in its published layout")
    parser.add_argument("--out", required=True, help="a new or empty folder for the prepared arrays (resumes a "
                                                     "stopped preparation of the same settings)")
    parser.add_argument("--image-model", help="local Hugging Face model folder for images and video frames "
                                              "(e.g. microsoft/resnet-50)")
    parser.add_argument("--text-model", help="local model folder for text (e.g. bert-base-uncased)")
    parser.add_argument("--audio-model",
                        help="local model folder for audio (e.g. MIT/ast-finetuned-audioset-10-10-0.4593)")
    parser.add_argument("--raw", nargs="+", default=[], metavar="MODALITY",
                        help="store these modalities as raw tensors (images/frames uint8, audio log-mel) for "
                             "end-to-end training with ConvEncoder")
    parser.add_argument("--image-size", type=int, default=64, help="side of raw images and frames (default 64)")
    parser.add_argument("--frames", type=int, default=1, help="frames per clip (default 1: the middle one)")
    parser.add_argument("--fps", type=int, default=1, help="CREMA-D, AVE: read Image-<fps>-FPS(-SE)/ (default 1)")
    parser.add_argument("--n-mels", type=int, default=128, help="log-mel bands of raw audio (default 128)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="audio clip length, tiled or cut (default: CREMA-D 3, AVE 10)")
    parser.add_argument("--text-max-length", type=int, default=128, help="tokens per text (default 128)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="threads reading files")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda")
    parser.add_argument("--precision", default="fp32", help="fp32 | bf16 (autocast; changes the numbers)")
    parser.add_argument("--on-corrupt", default="stop", help="stop (default): a file that cannot be decoded stops "
                                                             "the run, naming it; absent: mark it absent (a row with "
                                                             "nothing else is left out)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from local folders only
    from mmal.prepare.decode import CorruptSource  # after the environment: transformers reads it on import
    from mmal.prepare.run import prepare

    try:
        manifest = prepare(
            args.dataset, args.root, args.out, models={"image": args.image_model, "text": args.text_model,
                                                       "audio": args.audio_model},
            raw=args.raw, image_size=args.image_size, frames=args.frames, fps=args.fps, n_mels=args.n_mels,
            seconds=args.seconds, max_length=args.text_max_length, batch_size=args.batch_size, device=args.device,
            precision=args.precision, on_corrupt=args.on_corrupt, workers=args.workers)
    except ConfigError as err:
        print(f"mmal-prepare: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"mmal-prepare: stopped. Every batch written so far is kept in {args.out}/.incomplete: rerun the "
              "same command to resume", file=sys.stderr)
        sys.exit(130)
    except CorruptSource as err:
        # Removing the only source of a row removes the row, which can move rows already written (CREMA-D
        # without split files draws its split from the clips there) and so be refused; --on-corrupt absent
        # leaves that row out at the end without changing the others.
        fix = ("replace the file with a good copy and rerun the same command to resume, or add --on-corrupt "
               "absent to leave its row out (the file is its row's only source: do not remove it)"
               if err.only_source else "replace or remove the file and rerun the same command to resume, or add "
               "--on-corrupt absent to mark such files absent")
        print(f"mmal-prepare: error: {err}. The rows before it are kept in {args.out}/.incomplete: {fix}",
              file=sys.stderr)
        sys.exit(1)
    counts = ", ".join(f"{split} {c['rows']} rows{_missing(c)}" for split, c in manifest["splits"].items())
    print(f"prepared {manifest['dataset']}: {counts} in {args.out}")
    if manifest["dropped"]:
        print(f"left out: {len(manifest['dropped'])} rows with no modality at all (named in manifest.json)")
    print(f"train with: {manifest['train']}")


def _missing(counts: dict) -> str:
    """`` (absent: visual 5; corrupt: audio 1)``: the modalities missing from rows of a split, if any."""
    parts = [f"{what}: " + ", ".join(f"{m} {n}" for m, n in counts[what].items() if n)
             for what in ("absent", "corrupt") if any(counts[what].values())]
    return f" ({'; '.join(parts)})" if parts else ""
