#!/bin/bash
# Attack the demo's three unlearned models (run scripts/demo.sh first) and compare them:
# the table and plot of docs/guides/robustness.md (about 20 minutes on a 2-core CPU).
set -e
cd "$(dirname "$0")/.."
T=$(ls -d runs/demo/cache/target-*/model); R=$(ls -d runs/demo/cache/retain-*/model)
for m in ME_GD GA_GD IDK_AP; do
  .venv/bin/python -m jaxunlearn attack --config models/smollm2-135m \
    model.path=runs/demo/unlearn/$m/model attack.target_model=$T attack.retain_model=$R \
    data.source=files data.forget_file=runs/demo/data/eval/tofu/forget01_perturbed.json \
    data.retain_file=runs/demo/data/eval/tofu/retain_perturbed.json \
    data.max_length=128 'data.buckets=[64,96,128]' eval.num_rows=15 eval.batch_size=15 \
    eval.generation_budget=open_unlearning eval.max_new_tokens=48 eval.nli_judge=none \
    attack.relearn_lr=5e-5 'attack.relearn_steps=[2,5,10]' mesh.data=1 \
    output.dir=runs/demo/attack/$m --overwrite
done
.venv/bin/python -m jaxunlearn report runs/demo/attack/ME_GD runs/demo/attack/GA_GD runs/demo/attack/IDK_AP \
  --label ME+GD --label GA+GD --label IDK+AP --out runs/demo/attack/report
