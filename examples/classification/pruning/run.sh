#!/usr/bin/env bash
# Prune one of the seed's three ImageNet classifiers to -50% FLOPs and fine-tune it.
#
#   ./run.sh [mobilenet_v1|mobilenet_v2|resnet34] [extra compress.py / torchslim compress flags...]
#
# Nothing is downloaded. Put the data and (optionally) pretrained weights here first:
#   data/ILSVRC2012/            train_list.txt, val_list.txt, train/..., val/... (see README.md)
#   pretrain/mobilenet_v1.pth   a MobileNetV1 state dict trained by you (torchslim's own MobileNetV1)
#   pretrain/mobilenet_v2.pth   e.g. torchvision's mobilenet_v2-b0353104.pth, renamed
#   pretrain/resnet34.pth       e.g. torchvision's resnet34-b627a593.pth, renamed
# Without a pretrained file the model is pruned from random initialisation (a warning is printed).
# A second run with the same config resumes from the newest checkpoint in checkpoints/<model>/.
set -euo pipefail
cd "$(dirname "$0")"

model="${1:-mobilenet_v1}"
shift || true
case "$model" in
    mobilenet_v1|mobilenet_v2|resnet34) ;;
    *) echo "usage: $0 [mobilenet_v1|mobilenet_v2|resnet34] [flags...]" >&2; exit 2 ;;
esac

args=(--model "$model" --config_file "configs/$model.yaml")
weights="pretrain/$model.pth"
if [ -f "$weights" ]; then
    args+=(--pretrained_model "$weights")
else
    echo "warning: $weights not found; starting from random weights (see the comments in $0)" >&2
fi

# export CUDA_VISIBLE_DEVICES=0   # choose the GPU, as the seed's run.sh did
exec "${PYTHON:-python}" compress.py "${args[@]}" "$@"
