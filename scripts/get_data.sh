#!/usr/bin/env bash
# Fetch every dataset the scripts read into the layout they expect (DATA_DIR, default ./data), on a machine with
# internet access. Already-present files are kept. Pass the dataset names to fetch only some:
#
#   bash scripts/get_data.sh [DATA_DIR] [uci] [cifar] [text]
#
# Layout written (the same as --data-dir / $RLO_DATA_DIR expect):
#   ionosphere/ionosphere.data   madelon/madelon_{train,valid}.{data,labels}   spectf/SPECTF.{train,test}
#   cifar-10-batches-py/ (torchvision's CIFAR-10; train.py also reads cifar10-jpeg/{train,test}/<class>/*.jpg)
#   wikitext-2/{train,valid,test}.txt (tokenized)   wikitext-2-raw/wiki.{train,valid,test}.raw
#   ptb/ptb.{train,valid,test}.txt   c4/c4_validation_2k.jsonl (first 2,000 documents of C4 en validation shard 0)
# The digits quick start needs nothing: scikit-learn ships that dataset.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-data}"; shift || true
WHAT="${*:-uci cifar text}"
mkdir -p "$DATA"
UCI=https://archive.ics.uci.edu/ml/machine-learning-databases

fetch() {  # url dest
  if [[ -s "$2" ]]; then echo "have $2"; return; fi
  mkdir -p "$(dirname "$2")"
  echo "get  $2"
  curl -fsSL --retry 3 -o "$2.part" "$1" && mv "$2.part" "$2"
}

if [[ $WHAT == *uci* ]]; then
  fetch "$UCI/ionosphere/ionosphere.data" "$DATA/ionosphere/ionosphere.data"
  for f in madelon_train.data madelon_train.labels madelon_valid.data; do
    fetch "$UCI/madelon/MADELON/$f" "$DATA/madelon/$f"
  done
  fetch "$UCI/madelon/madelon_valid.labels" "$DATA/madelon/madelon_valid.labels"
  fetch "$UCI/spect/SPECTF.train" "$DATA/spectf/SPECTF.train"
  fetch "$UCI/spect/SPECTF.test" "$DATA/spectf/SPECTF.test"
fi

if [[ $WHAT == *cifar* ]]; then
  python - "$DATA" <<'PY'
import sys
import utils.tv_compat  # noqa: F401
import torchvision
for cls in (torchvision.datasets.CIFAR10, torchvision.datasets.CIFAR100):
    cls(sys.argv[1], train=True, download=True)
    cls(sys.argv[1], train=False, download=True)
PY
fi

if [[ $WHAT == *text* ]]; then
  python - "$DATA" <<'PY'
import json, os, sys
import datasets
root = sys.argv[1]

def write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        print("have", path); return
    with open(path + ".part", "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(path + ".part", path); print("wrote", path)

for split, name in (("train", "train"), ("validation", "valid"), ("test", "test")):
    tok = datasets.load_dataset("wikitext", "wikitext-2-v1", split=split)["text"]
    write(f"{root}/wikitext-2/{name}.txt", tok)
    raw = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=split)["text"]
    write(f"{root}/wikitext-2-raw/wiki.{name}.raw", raw)
    ptb = datasets.load_dataset("ptb_text_only", "penn_treebank", split=split)["sentence"]
    write(f"{root}/ptb/ptb.{name}.txt", [f" {s} \n" for s in ptb])
c4 = datasets.load_dataset("allenai/c4", data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"},
                           split="validation")
write(f"{root}/c4/c4_validation_2k.jsonl", [json.dumps({"text": t}) + "\n" for t in c4["text"][:2000]])
PY
fi
echo "data under $DATA: point the scripts at it with --data-dir $DATA or RLO_DATA_DIR=$DATA"
