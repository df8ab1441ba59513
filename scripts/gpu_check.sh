#!/usr/bin/env bash
# The GPU rows of docs/benchmarks.md, as one script of at most 8 minutes on a CUDA machine with mmal
# installed over a CUDA build of PyTorch (`pip install torch && pip install -e ".[dev]"`):
#   bash scripts/gpu_check.sh 2>&1 | tee gpu_check.log
# 1. the default experiment on CUDA, fp32 and bf16 (about 20 s each);
# 2. the scale benchmark (Food-101-sized features, 90k pool, 101 classes) for random and BADGE, fp32 and bf16;
# 3. mmal-prepare on fixture trees with the full-size backbones (ResNet-50, BERT-base, AST), fp32 and bf16,
#    then the prepared CREMA-D raw tensors trained end to end with ConvEncoder (+experiment=cremad_raw).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$(mktemp -d)}
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.__version__, torch.cuda.get_device_name())"
export HF_HUB_OFFLINE=1
for precision in 32 bf16; do
    /usr/bin/time -f "default experiment, cuda $precision: %e s wall" \
        python -m mmal.train logger=none trainer.device=cuda trainer.precision=$precision \
        hydra.run.dir="$out/default_$precision" 2>&1 | tail -2
done
for precision in 32 bf16; do
    python scripts/bench_scale.py --device cuda --precision $precision --strategies random,badge
done
for precision in fp32 bf16; do
    python -W ignore scripts/bench_prepare.py --device cuda --precision $precision --rows 960 --batch-size 128
done
python - "$out" <<'PY'
import sys, time
from pathlib import Path
from mmal.prepare import prepare
from mmal.prepare.fixtures import cremad_tree
root = Path(sys.argv[1]) / "crema"
cremad_tree(root, clips_per_emotion=200, split_files=True, image_sizes=(480, 481), seconds=(2.0, 3.0))
start = time.perf_counter()
prepare("cremad", root, Path(sys.argv[1]) / "cremad_raw", raw=["audio", "visual"], progress=False)
print(f"prepared 1,200 raw CREMA-D clips in {time.perf_counter() - start:.1f} s")
PY
/usr/bin/time -f "cremad_raw end to end, cuda: %e s wall" \
    python -m mmal.train +experiment=cremad_raw dataset.root="$out/cremad_raw" logger=none trainer.device=cuda \
    al.initial_size=60 al.query_size=60 al.cycles=5 hydra.run.dir="$out/cremad_raw_run" 2>&1 | tail -3
