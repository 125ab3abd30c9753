#!/usr/bin/env bash
# The lab on real data (CR product-review sentences, a small WikiText-2 LM; configs/lab_cr.yaml), all four
# commands, then the small result files copied to benchmarks/results/lab_cr/. Run from the repository root:
#   bash benchmarks/lab_cr.sh [../shared/data]
# Every step is cached in runs/lab_cr*: a rerun skips what is done.
set -euo pipefail
DATA=${1:-../shared/data}
PY=${PYTHON:-python}
CLI="$PY -m ulmfit_lab.cli"
OUT=benchmarks/results/lab_cr
LM="lm_pretrain.source=pretrained lm_pretrain.weights=runs/lab_cr/lm/model"  # the LM the first run pretrained
mkdir -p "$OUT"
$PY benchmarks/lab_data.py --data "$DATA" --out runs/lab_data
$CLI run configs/lab_cr.yaml                                   # the base run: LM, LM fine-tuning, classifier
$CLI advise configs/lab_cr.yaml                                # all 3,017 labelled sentences
# the same data with 300 labels (and the same LM): the small-data row of the 2x2
$CLI advise configs/lab_cr.yaml data.max_train=300 $LM run.dir=runs/lab_cr_300
$PY benchmarks/lab_calibration.py configs/lab_cr.yaml --data runs/lab_data \
    --wiki "$DATA/wikitext-2/wiki.valid.tokens" --out "$OUT/advise_calibration.csv"
$CLI probe configs/lab_cr.yaml --encoders pretrained,finetuned,classifier
$CLI ablate configs/lab_cr.yaml --grid paper
# the curve's ULMFiT LM is fine-tuned once on every CR sentence outside the test set plus the 3,000 UCI review
# sentences (Amazon, Yelp, IMDb; their labels unused): the unlabelled in-domain text the advice asks for
$CLI curve configs/lab_cr.yaml 'data.unlabelled=[runs/lab_data/uci.csv]' --sizes 50,100,300,1000,3000 --seeds 0,1,2
# the same curve's ULMFiT with a second general-domain LM of the same size: one epoch on 3,800 unlabelled IMDb
# reviews (~1.1M tokens) instead of 300 WikiText-2 articles; scratch and TF-IDF points are the first curve's
$CLI lm configs/lab_cr.yaml "lm_pretrain.corpus=[$DATA/imdb/aclImdb.tar.xz#unlabelled]" lm_pretrain.max_docs=4000 \
    run.precision=bf16 run.dir=runs/lab_cr_reviews_lm
$CLI curve configs/lab_cr.yaml 'data.unlabelled=[runs/lab_data/uci.csv]' lm_pretrain.source=pretrained \
    lm_pretrain.weights=runs/lab_cr_reviews_lm/lm/model --methods ulmfit --sizes 50,100,300,1000,3000 --seeds 0,1,2 \
    --out runs/lab_cr/curve_reviews_lm
# the small result files (tables, plots, JSON) and one run's stage plots
cp runs/lab_cr/advise/advice.{md,json,png} runs/lab_cr/advise/advice_overrides.txt "$OUT/"
for f in advice.md advice.json advice.png advice_overrides.txt; do cp "runs/lab_cr_300/advise/$f" "$OUT/300_labels_$f"; done
cp runs/lab_cr/probe/probe.{csv,md,json,png} "$OUT/"
cp runs/lab_cr/ablate/ablation.{csv,md,png} runs/lab_cr/ablate/ablation_runs.csv "$OUT/"
cp runs/lab_cr/curve/curve.{csv,md,png,json} runs/lab_cr/curve/curve_points.csv "$OUT/"
for f in curve.csv curve.md curve.png curve.json curve_points.csv; do
  cp "runs/lab_cr/curve_reviews_lm/$f" "$OUT/reviews_lm_$f"
done
$PY -c "from ulmfit_lab.lab import merge_curves, plot_curve, read_curve
plot_curve(merge_curves([read_curve('runs/lab_cr/curve'), read_curve('runs/lab_cr/curve_reviews_lm')],
                        [{'ulmfit': 'ulmfit, WikiText-2 LM'}, {'ulmfit': 'ulmfit, IMDb-reviews LM'}]),
           '$OUT/curve_both_lms.png')"
for s in lm lm_finetune classifier; do
  for p in lr_schedule loss; do cp "runs/lab_cr/$s/$p.png" "$OUT/run_${s}_$p.png"; done
done
cp runs/lab_cr/evaluate/confusion_matrix.png "$OUT/run_confusion_matrix.png"
cp runs/lab_cr/ablate/clf_one_cycle/seed42/classifier/lr_schedule.png "$OUT/ablate_clf_one_cycle_lr_schedule.png"
