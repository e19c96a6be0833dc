#!/bin/bash
# MUSE and WMDP end to end on the real SmolLM2-135M-Instruct with SYNTHETIC, schema-exact
# data (examples/synthetic_benchmarks.py: made-up news about fictitious towns): the tables
# of docs/guides/muse-wmdp.md. About 25 minutes on a 2-core CPU.
#   1. target = SmolLM2 finetuned on forget + retain articles; retrain = on retain only
#   2. unlearn the forget articles from the target: GA, GA+GD, NPO+GD, SimNPO+GD, and a
#      task vector (the target reinforced on the forget articles, then negated)
#   3. MUSE's metrics for every model, PrivLeak against the retrained model's AUC
#   4. WMDP: RMU on the synthetic cyber corpora; WMDP-cyber and MMLU accuracy before / after
set -e
cd "$(dirname "$0")/.."
J=".venv/bin/python -m jaxunlearn"
OUT=runs/suites-demo
DATA=$OUT/data
MUSE="data.data_dir=$DATA/muse/MUSE-News"
SMALL="data.max_length=128 data.chunking=documents mesh.data=1"
.venv/bin/python examples/synthetic_benchmarks.py $DATA
.venv/bin/python - "$DATA" <<'PY'  # the target's training text: forget + retain articles
import sys, json, pyarrow.parquet as pq
d = sys.argv[1] + "/muse/MUSE-News/raw/"
rows = pq.read_table(d + "forget-00000-of-00001.parquet").to_pylist() + pq.read_table(d + "retain1-00000-of-00001.parquet").to_pylist()
open(sys.argv[1] + "/target_train.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
TRAIN="train.lr=2e-4 train.epochs=6 train.batch_size=4 train.warmup_steps=0"
$J finetune --config models/smollm2-135m data.source=corpus data.train_file=$DATA/target_train.jsonl $SMALL $TRAIN \
  output.dir=$OUT/target --overwrite --no-progress
$J finetune --config models/smollm2-135m data.source=muse $MUSE data.train_split=retain1 $SMALL $TRAIN \
  output.dir=$OUT/retrain --overwrite --no-progress
$J finetune --config models/smollm2-135m model.path=$OUT/target/model data.source=muse $MUSE data.train_split=forget \
  $SMALL train.lr=1e-4 train.epochs=3 train.batch_size=4 train.warmup_steps=0 output.dir=$OUT/reinforced --overwrite --no-progress
$J task-vector $OUT/target/model $OUT/reinforced/model --out $OUT/unlearn/TV/model --overwrite
UNL="--config models/smollm2-135m model.path=$OUT/target/model data.source=muse $MUSE data.forget_split=forget \
  data.retain_split=retain1 $SMALL train.lr=2e-5 train.epochs=5 train.batch_size=4 train.schedule=constant train.warmup_steps=0"
$J unlearn $UNL objective.name=GA objective.forget_weight=1 output.dir=$OUT/unlearn/GA --overwrite --no-progress
$J unlearn $UNL objective.name=GA+GD objective.forget_weight=1 output.dir=$OUT/unlearn/GD --overwrite --no-progress
$J unlearn $UNL objective.name=NPO+GD objective.forget_weight=1 output.dir=$OUT/unlearn/NPO --overwrite --no-progress
$J unlearn $UNL objective.name=SimNPO+GD objective.forget_weight=0.125 output.dir=$OUT/unlearn/SimNPO --overwrite --no-progress
EV="--config muse/eval $MUSE model.compute_dtype=float32 eval.batch_size=12 mesh.data=1 --overwrite --no-progress"
$J eval $EV model.path=$OUT/retrain/model output.dir=$OUT/eval/retrain
for m in target TV GA GD NPO SimNPO; do
  path=$OUT/unlearn/$m/model; [ $m = target ] && path=$OUT/target/model
  $J eval $EV model.path=$path muse.retain_eval=$OUT/eval/retrain output.dir=$OUT/eval/$m
done
$J report $OUT/eval/target $OUT/eval/retrain $OUT/eval/GA $OUT/eval/GD $OUT/eval/NPO $OUT/eval/SimNPO $OUT/eval/TV \
  --out $OUT/muse_report
# WMDP: RMU on the synthetic cyber corpora, accuracy before and after
CH="--config wmdp/eval choice.data_dir=$DATA 'choice.tasks=[wmdp_cyber,mmlu]' model.compute_dtype=float32 mesh.data=1"
eval $J eval $CH model.path=$OUT/target/model output.dir=$OUT/wmdp/before --overwrite --no-progress
$J unlearn --config wmdp/rmu model.path=$OUT/target/model model.compute_dtype=float32 model.remat=none \
  data.template=auto data.forget_file=$DATA/wmdp-corpora/cyber-forget-corpus.jsonl \
  data.retain_file=$DATA/wmdp-corpora/cyber-retain-corpus.jsonl data.max_length=128 train.batch_size=4 \
  objective.options.rmu_steering_coeff=20 train.max_steps=20 mesh.data=1 output.dir=$OUT/wmdp/RMU --overwrite --no-progress
eval $J eval $CH model.path=$OUT/wmdp/RMU/model output.dir=$OUT/wmdp/after --overwrite --no-progress
$J report $OUT/wmdp/before $OUT/wmdp/after --label target --label RMU --out $OUT/wmdp_report
