#!/usr/bin/env python
"""Run the inference model (ONNX Runtime), time it and print predicted classes (the seed's infer.py).

As in the seed: 10 warm-up runs, then 30 timed runs, reported in ms per sample.
--model_path is an eval model directory (its model.onnx), a checkpoint directory
or an .onnx file. Images come from --images files or the validation split of --data.
"""

from __future__ import annotations

import argparse
import sys

from torchslim.cli.main import main

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model_path", required=True, help="The inference model.")
parser.add_argument("--model_name", help="Ignored (seed flag): the inference model is model.onnx.")
parser.add_argument("--params_name", help="Ignored (seed flag): ONNX files hold their weights.")
parser.add_argument(
    "--use_gpu", choices=["True", "False"], help="Ignored: inference runs on ONNX Runtime's CPU."
)
parser.add_argument(
    "--images", nargs="+", help="Image files to classify (default: validation images of --data)."
)
parser.add_argument("--data", default="imagenet:./data/ILSVRC2012", help="Data spec (default: %(default)s).")
parser.add_argument("--batch_size", type=int, default=8, help="Validation images to classify (default 8).")
parser.add_argument("--json", action="store_true", help="Print one JSON object.")

if __name__ == "__main__":
    args = parser.parse_args()
    if args.model_name or args.params_name or args.use_gpu:
        print(
            "note: --model_name/--params_name/--use_gpu are ignored; "
            "torchslim runs model.onnx in ONNX Runtime",
            file=sys.stderr,
        )
    source = (
        ["--images", *args.images] if args.images else ["--data", args.data, "--limit", str(args.batch_size)]
    )
    sys.exit(main(["infer", "--model-path", args.model_path, *source] + (["--json"] if args.json else [])))
