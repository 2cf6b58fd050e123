"""Write the folder that ``bench/gpu_check.py --assets`` reads on a machine without textlora's model
packages or ``../shared`` (a lent GPU machine that receives only a small copy of the checkout).

It holds, in under 60 MB: MiniLM with its weights in fp16 (the check restores fp32), SmolLM2-135M's
config and tokenizer without weights (the check builds a random-weight model of that shape), and the
AG News rows the main job trains and is scored on (the main job's synthetic rows where they exist).

    python bench/gpu_assets.py .gpu    # then: bash bench/gpu_check.sh .gpu
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "agnews")
    p.add_argument("--synthetic", type=Path, default=ROOT / "runs" / "agnews-target" / "synthetic" / "train.csv")
    args = p.parse_args(argv)

    from safetensors.torch import load_file, save_file

    from textlora.sources import minilm_dir, smollm2_dir

    out = args.folder
    (out / "minilm").mkdir(parents=True, exist_ok=True)
    src = Path(minilm_dir())
    for f in src.iterdir():
        if f.is_file() and f.name not in ("model.safetensors", "README.md", "data_config.json"):
            shutil.copy(f, out / "minilm" / f.name)
    state = {k: v.half() for k, v in load_file(src / "model.safetensors").items()}
    save_file(state, out / "minilm" / "model.safetensors", metadata={"format": "pt"})
    (out / "smollm2").mkdir(exist_ok=True)
    for f in Path(smollm2_dir()).iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, out / "smollm2" / f.name)
    (out / "data").mkdir(exist_ok=True)
    for name in ("train.csv", "target_dev_labelled.csv", "test_labelled.csv"):
        shutil.copy(args.data / name, out / "data" / name)
    if args.synthetic.is_file():
        shutil.copy(args.synthetic, out / "data" / "synthetic.csv")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 1e6:.1f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
