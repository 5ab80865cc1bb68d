#!/usr/bin/env bash
# The checks that need a GPU, as one script for a short lease of a GPU machine (docs/benchmarks.md, "On a GPU").
#
# Prepared on the development machine (the GPU machine reaches no package index): wheels of hacknip-core,
# hacknip-chgnet and what they need beyond that machine's own Python in .whl/, and in .devcarry/ the start geometries
# (`python bench/relax_batched.py --n 50 --save-geometries .devcarry/bbbp50-mmff94.extxyz`) and a copy of
# matbench_phonons.json.gz. Then, on the GPU machine, from the repository's root:
#
#     OUT=/some/folder bash bench/device_checks.sh [seconds]     # everything must end within [seconds] (default 520)
#
# Every log and JSON goes to /tmp/device-checks and, packed after each step, to $OUT/device-checks.tar.gz (the lease
# brings back a few files only). DEVICE=cpu SKIP_INSTALL=1 PYTHON=.venv/bin/python N=4 EPOCHS=1 LIMIT=60 runs the same steps small, as a dry run here.
#
# The steps ($STEPS, default "relax featurize finetune"; also relax_workers), each writing its log and JSON:
#   relax: relaxing 50 BBBP molecules with CHGNet on the GPU: in batches of 50, of 16, and one at a time; meanwhile, on the
#      same machine's CPU cores, one at a time as before (5 processes of 10 molecules, one torch thread each);
#   relax_workers: in batches of 50 with CHGNet's graphs built in each of $GRAPH_WORKERS processes, and one at a time
#      against a batch of 10 on the GPU;
#   featurize: featurising all of Matbench phonons on the GPU at budgets ($BUDGETS) of 1 024 to 32 768 atoms per pass,
#      the graphs built in $FEATURIZE_WORKERS processes (default 0: here);
#   finetune: fine-tuning CHGNet on Matbench phonons with the paper's recipe on the GPU (`hacknip finetune`), for the time
#      that is left: its log has every epoch's seconds.
set -u
DEADLINE=$((SECONDS + ${1:-520}))
OUT=${OUT:-/tmp/device-checks-out}
DEVICE=${DEVICE:-cuda} N=${N:-50} EPOCHS=${EPOCHS:-200}
LOGS=/tmp/device-checks
mkdir -p "$OUT" "$LOGS"
export PYTHONUNBUFFERED=1 HACKNIP_HOME=/tmp/hacknip-home OMP_WAIT_POLICY=PASSIVE
PYTHON=${PYTHON:-python3}
left() { echo $((DEADLINE - SECONDS)); }
pack() { tar -czf "$OUT/device-checks.tar.gz" -C "$LOGS" . ; }
pin() {  # pin() CORES COMMAND...: on its own cores where the machine has cores to spare
  if [ "$(nproc)" -ge 8 ] && command -v taskset > /dev/null; then taskset -c "$@"; else "${@:2}"; fi
}

if [ -z "${SKIP_INSTALL:-}" ]; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the wheels failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD/.devcarry/pysite  # pysite: nvidia-ml-py3, which chgnet imports, has no wheel
fi
$PYTHON - <<'EOF' 2>&1 | tee "$LOGS/environment.txt"
import platform, torch, chgnet, ase, pymatgen.core, hacknip
print("python", platform.python_version(), "| torch", torch.__version__, "| chgnet", chgnet.__version__, "| ase",
      ase.__version__, "| cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
import os; print("cpus", os.cpu_count())
EOF
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
nvidia-smi > "$LOGS/nvidia-smi.txt" 2>&1

GEOMETRIES=.devcarry/bbbp50-mmff94.extxyz
PHONONS=.devcarry/matbench_phonons.json.gz

single_threaded() {  # numpy's BLAS threads spin between a relaxation's small eigensolves and blur its CPU seconds
  export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
}

relax() {
single_threaded
echo "== relaxation ($(left) s left)"
PART=$(( (N + 4) / 5 ))
for part in 0 1 2 3 4; do  # the old path, on this machine's CPU cores, while the GPU arms run
  pin $((2 + part)) timeout $(( $(left) - 240 )) $PYTHON bench/relax_batched.py --geometries $GEOMETRIES \
    --start $((part * PART)) --n $PART --device cpu --threads 1 --batch-sizes 1 --json "$LOGS/relax-cpu-$part.json" \
    > "$LOGS/relax-cpu-$part.log" 2>&1 &
done
pin 0,1 timeout 200 $PYTHON bench/relax_batched.py --geometries $GEOMETRIES --n $N --device $DEVICE --threads 1 \
  --batch-sizes $N,16,1 --json "$LOGS/relax-gpu.json" 2>&1 | tee "$LOGS/relax-gpu.log"
pack
}

relax_workers() {  # batches with CHGNet's graphs built in $GRAPH_WORKERS processes; one at a time on the GPU
single_threaded
echo "== relaxation, graph workers ($(left) s left)"
for workers in $GRAPH_WORKERS; do
  timeout 75 $PYTHON bench/relax_batched.py --geometries $GEOMETRIES --n $N --device $DEVICE --threads 1 \
    --batch-sizes $N --option graph_workers=$workers --json "$LOGS/relax-gpu-workers-$workers.json" 2>&1 \
    | tee "$LOGS/relax-gpu-workers-$workers.log"
done
timeout 60 $PYTHON bench/relax_batched.py --geometries $GEOMETRIES --n $((N / 5)) --device $DEVICE --threads 1 \
  --batch-sizes 1,$((N / 5)) --json "$LOGS/relax-gpu-one.json" 2>&1 | tee "$LOGS/relax-gpu-one.log"
pack
}

featurize() {
echo "== featurisation, graph workers ${FEATURIZE_WORKERS:-0} ($(left) s left)"
timeout 100 $PYTHON bench/featurize_throughput.py --backbone chgnet --data $PHONONS --n $((N * 25)) \
  --option device=$DEVICE --option batch_size=100000 --option graph_workers=${FEATURIZE_WORKERS:-0} \
  --sweep ${BUDGETS:-1024,2048,4096,8192,16384,32768} --repeats 1 2>&1 | tee "$LOGS/featurize-gpu-${FEATURIZE_WORKERS:-0}.log"
pack
}

finetune() {
echo "== fine-tuning ($(left) s left)"
rm -rf /tmp/finetune-phonons
timeout $(( $(left) - 15 )) $PYTHON -m hacknip finetune --data $PHONONS --backbone chgnet@4 --device $DEVICE \
  --epochs $EPOCHS ${LIMIT:+--limit $LIMIT} --batch-size 32 --out /tmp/finetune-phonons --checkpoints /tmp/finetune-checkpoints \
  > "$LOGS/finetune-stdout.log" 2>&1
echo "fine-tuning exit $?"
cp /tmp/finetune-phonons/finetune.log "$LOGS/" 2>/dev/null
cp /tmp/finetune-phonons/results.json "$LOGS/finetune-results.json" 2>/dev/null
}

for step in ${STEPS:-relax featurize finetune}; do $step; done
wait
pack
tail -n 3 "$LOGS"/relax-cpu-*.log 2>/dev/null
tail -n 5 "$LOGS/finetune.log" "$LOGS/finetune-stdout.log" 2>/dev/null
echo "done ($(left) s left)"
