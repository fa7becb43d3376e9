#!/usr/bin/env bash
# Multi-GPU training runs on one host (2, 4 or 8 GPUs), each invocation fitting a 600 s command:
# djl-moe's `launch --nproc-per-node W pretrain --device gpu` against W = 1 and against torch.
#
#   native-ep/bench/multi_gpu_bench.sh --part ours|torch|ep8-train|ep8-resume|table
#       [--carry DIR] [--out DIR] [--worlds 2,4] [--steps N] [--budget SECONDS] [--python PY]
#       [--tf32] [--ckpt-dir DIR] [--save-reserve SECONDS] [--allreduce nccl|host|auto]
#
# The 4-layer 16B shape (--model deepseek-v3-16b --layers 4: 1 dense + 3 MoE layers, 64 experts
# top-6, H = 2048), fp32 with TF32 off unless --tf32, per rank one sequence of 2048 tokens:
#   --part ours    DJL's JNI (bin/build-djl-jni, from --carry), the config.json (plan --save-config),
#                  then for each W of --worlds (default: 2, and 4 where 4 GPUs are seen; at most the
#                  GPUs present): launch --nproc-per-node W pretrain --device gpu --batch W (global:
#                  W x 2048 tokens) for --steps steps (default 20), and pretrain --device gpu at W = 1
#                  with the same global batch (the loss curve to compare, step by step, against the
#                  CPU bound 1e-4 relative). DJL_MOE_EP_TIMING=device so that the EP time in
#                  metrics.jsonl is the EP kernels' own (the device is waited for around each call).
#   --part torch   torch_ep_train_step.py under torchrun --nproc-per-node W for each W, bf16 and
#                  fp32 + TF32 (experts sharded, all_to_all_single), per rank 1 x 2048 tokens.
#   --part ep8-train   8 GPUs: the full deepseek-v3-16b (27 layers) with --precision fp8 (FP8 wire,
#                  FP8 expert GEMMs on the GPU), --seq-len 2048 --batch 8 (plan: 68 GiB per rank at
#                  4096 tokens it is 103 GiB, above an H100's 80 GB), 200 steps; `plan` first (memory
#                  per rank, FLOPs), GPU memory sampled by nvidia-smi, and --save-reserve seconds
#                  (default 300) before the budget ends the ranks are sent SIGTERM: each stops after
#                  its step and writes the checkpoint (about 190 GB: parameters and AdamW moments in
#                  float32) into --ckpt-dir (default /tmp/multi-gpu-ckpt; the largest disk). Skipped,
#                  with the reason, where the disk has too little room.
#   --part ep8-resume  the same job resumed from that checkpoint (so on the same machine: call it
#                  at once, before the machine is released), on to step 200 or the budget; a
#                  second checkpoint only where the disk has room for it.
#   --part table   the Markdown table and results.json from what --out holds (runs anywhere).
# The dense gradients are summed with NCCL on the GPUs (--allreduce, default nccl, sets
# DJL_MOE_GPU_ALLREDUCE; host: through host memory, as before NCCL was wired; NCCL is the Python
# wheel's libnccl.so.2 unless NEP_NCCL_LIBRARY names one). Should the nccl runs fail at the
# communicator, run the part again with --allreduce host.
# Every part also writes the table; every run is under `timeout` (the smaller of its cap and what
# --budget, default 560 s, leaves after the time kept for the runs after it).
#
# A 30-minute lease, in order (each a command of at most 600 s; use the same --out, and copy it
# into $OUT at the end of each command, since a released machine starts bare):
#   nvidia-h100-x4 (or x2; --worlds 2):
#     1. native-ep/bench/multi_gpu_bench.sh --part ours  --carry .gpucarry --out /tmp/mg && cp -r /tmp/mg "$OUT"/
#     2. native-ep/bench/multi_gpu_bench.sh --part torch --out /tmp/mg && cp -r /tmp/mg "$OUT"/
#     3. locally: native-ep/bench/multi_gpu_bench.sh --part table --out <the two folders merged>
#   nvidia-h100-x8 (a separate lease; 2 back to back, within the idle release):
#     1. native-ep/bench/multi_gpu_bench.sh --part ep8-train  --carry .gpucarry --out /tmp/mg8; cp -r /tmp/mg8 "$OUT"/
#     2. native-ep/bench/multi_gpu_bench.sh --part ep8-resume --carry .gpucarry --out /tmp/mg8; cp -r /tmp/mg8 "$OUT"/
# The carry: native-ep/bench/make_gpucarry.sh --djl. Results: DIR/<run>/ (metrics.jsonl, log),
# DIR/*.json, DIR/results.json and DIR/table.md. Exit 0 when every run of the part gave figures.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/native-ep/bench"
part="" carry="" out="${OUT_DIR:-/tmp/multi-gpu-bench}" worlds="" steps=20 budget=560 python=python3
tf32=0 ckpt="/tmp/multi-gpu-ckpt" reserve=300 ep8_steps=200 allreduce=nccl
while [ $# -gt 0 ]; do
  case "$1" in
    --part) part=$2; shift 2 ;;
    --carry) carry=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --worlds) worlds=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --tf32) tf32=1; shift ;;
    --ckpt-dir) ckpt=$2; shift 2 ;;
    --save-reserve) reserve=$2; shift 2 ;;
    --allreduce) allreduce=$2; shift 2 ;;
    -h|--help) sed -n '2,49p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "multi_gpu_bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$part" in
  ours|torch|ep8-train|ep8-resume|table) ;;
  *) echo "multi_gpu_bench: --part ours|torch|ep8-train|ep8-resume|table is required" >&2; exit 2 ;;
esac
export DJL_OFFLINE=true OPT_OUT_TRACKING=true NCCL_NVLS_ENABLE=0 DJL_MOE_GPU_ALLREDUCE=$allreduce
if [ "$part" != table ] && [ -z "${NEP_NCCL_LIBRARY:-}" ]; then
  NEP_NCCL_LIBRARY=$("$python" -c 'import glob,site; p=[f for s in site.getsitepackages() for f in glob.glob(s+"/nvidia/nccl/lib/libnccl.so.2")]; print(p[0] if p else "libnccl.so.2")' 2> /dev/null || echo libnccl.so.2)
  export NEP_NCCL_LIBRARY
fi
unset TORCH_ALLOW_TF32_CUBLAS_OVERRIDE
[ "$tf32" = 1 ] && export TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1
mkdir -p "$out"
start=$SECONDS
status=0

# part NAME CAP KEEP CMD...: runs CMD with a timeout of min(CAP, time left - KEEP), output in
# NAME.log, exit status in NAME.rc (124: timed out; 'skipped' when no time was left).
run_part() {
  local name=$1 cap=$2 keep=$3
  shift 3
  local left=$((budget - (SECONDS - start) - keep))
  local t=$((cap < left ? cap : left))
  if [ "$t" -lt 15 ]; then
    echo "skipped: $t s left of the ${budget} s budget" > "$out/$name.log"
    echo skipped > "$out/$name.rc"
    echo "$name: skipped (no time left)"
    status=1
    return 1
  fi
  local t0=$SECONDS
  timeout -k 10 "$t" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$rc" > "$out/$name.rc"
  echo "$name: exit $rc after $((SECONDS - t0)) s (limit $t s)"
  [ $rc -eq 0 ] || status=1
  return $rc
}

# GPU memory of every GPU every 2 s into NAME.mem.csv while a run goes on.
sample_memory() {
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=index,memory.used,memory.total --format=csv,noheader,nounits -lms 2000 \
      > "$out/$1.mem.csv" 2> /dev/null &
    echo $!
  else
    echo ""
  fi
}
stop_sampling() { [ -n "$1" ] && kill "$1" 2> /dev/null; wait "$1" 2> /dev/null; return 0; }

gpus=0
command -v nvidia-smi > /dev/null && gpus=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU ')
if [ -z "$worlds" ]; then
  worlds=2
  [ "$gpus" -ge 4 ] && worlds=2,4
fi
[ "$part" = table ] || echo "multi_gpu_bench --part $part: $gpus GPU(s) seen; out $out; budget $budget s; dense all-reduce $allreduce (NCCL: ${NEP_NCCL_LIBRARY:-})" | tee "$out/$part.setup.txt"

# DJL's JNI and the Java command (the Java parts).
java_setup() {
  if [ -n "$carry" ]; then
    if run_part jni 150 0 "$root/bin/build-djl-jni" build --src "$carry/djl-jni-src" --cache "${DJL_CACHE_DIR:-/tmp/djlcache}"; then
      eval "$(grep -E '^export ' "$out/jni.log")"
    else
      return 1
    fi
    java=("$carry/jre/bin/java" -cp "$carry/lib/*")
  else
    java=(java -cp "$root/recipes/target/recipes-0.1.0-SNAPSHOT.jar:$root/recipes/target/lib/*")
  fi
  djl=("${java[@]}" -Xmx16g -Dai.djl.offline=true dev.djlmoe.recipes.cli.Main)
}

config="$out/config.json"
small=(--model deepseek-v3-16b --layers 4 --seq-len 2048 --precision fp32 --data synthetic --lr 3e-4
  --warmup 5 --log-every 1 --no-checkpoints)

if [ "$part" = ours ]; then
  if java_setup; then
    run_part plan 40 400 "${djl[@]}" plan --model deepseek-v3-16b --layers 4 --ep 1 --batch 1 --seq-len 2048 \
      --precision fp32 --save-config "$config"
    IFS=, read -r -a ws <<< "$worlds"
    n=${#ws[@]}
    i=0
    for w in "${ws[@]}"; do
      if [ "$gpus" -gt 0 ] && [ "$w" -gt "$gpus" ]; then
        echo "ours-w$w: skipped: $gpus GPU(s) here" | tee "$out/ours-w$w.log"; echo skipped > "$out/ours-w$w.rc"; status=1; continue
      fi
      i=$((i + 1))
      keep=$(( (n - i) * 2 * 120 + 120 ))
      m=$(sample_memory "ours-w$w")
      run_part "ours-w$w" 240 "$keep" env DJL_MOE_EP_TIMING=device "${djl[@]}" launch --nproc-per-node "$w" \
        pretrain --device gpu "${small[@]}" --batch "$w" --steps "$steps" --run-dir "$out/ours-w$w"
      stop_sampling "$m"
      m=$(sample_memory "ours-w1-b$w")
      run_part "ours-w1-b$w" 200 $(( (n - i) * 2 * 120 )) env DJL_MOE_EP_TIMING=device "${djl[@]}" \
        pretrain --device gpu "${small[@]}" --batch "$w" --steps "$steps" --run-dir "$out/ours-w1-b$w"
      stop_sampling "$m"
    done
  else
    status=1
  fi
fi

if [ "$part" = torch ]; then
  [ -s "$config" ] || cp "$here/deepseek-v3-16b-4layers.config.json" "$config"
  IFS=, read -r -a ws <<< "$worlds"
  n=${#ws[@]}
  i=0
  for w in "${ws[@]}"; do
    i=$((i + 1))
    for mode in bf16 fp32-tf32; do
      keep=$(( (n - i) * 2 * 100 ))
      [ "$mode" = bf16 ] && keep=$((keep + 100))
      run_part "torch-w$w-$mode" 200 "$keep" "$python" -m torch.distributed.run --standalone \
        --nproc-per-node "$w" "$here/torch_ep_train_step.py" --config "$config" --mode "$mode" \
        --batch 1 --seq-len 2048 --warmup 3 --steps 10 --json "$out/torch-w$w-$mode.json"
    done
  done
fi

if [ "$part" = ep8-train ] || [ "$part" = ep8-resume ]; then
  full=(--model deepseek-v3-16b --precision fp8 --seq-len 2048 --batch 8 --steps "$ep8_steps" --lr 3e-4
    --warmup 20 --data synthetic --log-every 1 --run-dir "$out/ep8")
  name=$part
  rm -f "$out/$name.rc"
  if [ "$gpus" -lt 8 ]; then
    echo "$name: needs 8 GPUs, $gpus seen" | tee "$out/$name.log"; echo skipped > "$out/$name.rc"; status=1
  elif java_setup; then
    if [ "$part" = ep8-train ]; then
      run_part plan8 40 480 "${djl[@]}" plan --model deepseek-v3-16b --ep 8 --batch 1 --seq-len 2048 \
        --precision fp8 --device-memory 79
      mkdir -p "$ckpt"
      free_gb=$(df -P -B1G "$ckpt" | awk 'NR == 2 { print $4 }')
      # parameters + AdamW m and v, float32: 12 bytes a parameter (15.7 B parameters)
      need_gb=$(grep -oE '[0-9,]+ parameters\)' "$out/plan8.log" | tr -d ', parameters)' | awk '{ printf "%d", $1 * 12 / 1e9 * 1.05 + 1 }')
      need_gb=${need_gb:-200}
      echo "checkpoint: about $need_gb GB needed, $free_gb GB free under $ckpt" | tee "$out/ckpt-space.txt"
      ck=(--checkpoint-dir "$ckpt" --keep-checkpoints 1)
      [ "$free_gb" -ge "$need_gb" ] || { ck=(--no-checkpoints); echo "checkpoint: skipped (too little room)" | tee -a "$out/ckpt-space.txt"; }
      rm -rf "$out/ep8"
    else
      [ -e "$ckpt/latest" ] || { echo "ep8-resume: no checkpoint under $ckpt (was the machine released?)" | tee "$out/$name.log"; echo skipped > "$out/$name.rc"; status=1; }
      free_gb=$(df -P -B1G "$ckpt" | awk 'NR == 2 { print $4 }')
      used_gb=$(du -s -B1G "$ckpt" 2> /dev/null | awk '{ print $1 }')
      ck=(--resume "$ckpt" --checkpoint-dir "$ckpt" --keep-checkpoints 1)
      [ "$free_gb" -ge "$((used_gb + 5))" ] || ck=(--resume "$ckpt" --no-checkpoints)
      echo "resume: checkpoint $used_gb GB, $free_gb GB free; ${ck[*]}" | tee -a "$out/ckpt-space.txt"
    fi
    if [ "$(cat "$out/$name.rc" 2> /dev/null)" != skipped ]; then
      m=$(sample_memory "$name")
      left=$((budget - (SECONDS - start) - 10))
      t0=$SECONDS
      env DJL_MOE_EP_TIMING=device "${djl[@]}" launch --nproc-per-node 8 pretrain --device gpu "${full[@]}" \
        "${ck[@]}" > "$out/$name.log" 2>&1 &
      lpid=$!
      # Train until save-reserve seconds before the end, then ask the ranks (not the launcher, whose
      # grace period is shorter than a save) to stop after their step and write the checkpoint.
      while kill -0 "$lpid" 2> /dev/null && [ $((SECONDS - t0)) -lt $((left - reserve)) ]; do sleep 2; done
      if kill -0 "$lpid" 2> /dev/null; then
        echo "$name: asking the ranks to stop and save at $((SECONDS - t0)) s" | tee -a "$out/$name.log"
        for c in $(pgrep -P "$lpid"); do kill -TERM "$c" 2> /dev/null; done
        while kill -0 "$lpid" 2> /dev/null && [ $((SECONDS - t0)) -lt "$left" ]; do sleep 2; done
        if kill -0 "$lpid" 2> /dev/null; then
          kill -TERM "$lpid" 2> /dev/null; sleep 5; kill -KILL "$lpid" 2> /dev/null
          echo "$name: out of time while saving" | tee -a "$out/$name.log"
        fi
      fi
      wait "$lpid"
      rc=$?
      echo "$rc" > "$out/$name.rc"
      echo "$name: exit $rc after $((SECONDS - t0)) s"
      [ $rc -eq 0 ] || status=1
      stop_sampling "$m"
      ls -la "$ckpt" >> "$out/ckpt-space.txt" 2>&1
    fi
  else
    status=1
  fi
fi

# The table (every part): results.json and table.md from what $out holds.
"$python" - "$out" <<'PY' || status=1
import csv, glob, json, os, re, statistics, sys
out = sys.argv[1]
GIB = float(1 << 30)
BOUND = 1e-4  # the CPU equivalence bound (per-step loss, relative)

def rc_of(name):
    p = os.path.join(out, name + ".rc")
    return open(p).read().strip() if os.path.exists(p) else None

def failure(name):
    rc = rc_of(name)
    log = os.path.join(out, name + ".log")
    tail = [l.strip() for l in open(log, errors="replace")] if os.path.exists(log) else []
    tail = [l for l in tail if l and ("rror" in l or "xception" in l or "skipped" in l)][-2:] or [l for l in tail if l][-2:]
    why = "timed out" if rc in ("124", "137") else "not run" if rc in (None, "skipped") else f"exit {rc}"
    return (why + (": " + " | ".join(tail) if tail else ""))[:300]

def peak_memory(name):
    p = os.path.join(out, name + ".mem.csv")
    if not os.path.exists(p):
        return None
    peak = {}
    for row in csv.reader(open(p)):
        try:
            i, used = int(row[0]), float(row[1])
        except (ValueError, IndexError):
            continue
        peak[i] = max(peak.get(i, 0.0), used)
    return {i: v / 1024 for i, v in sorted(peak.items())} or None  # MiB -> GiB

def metrics(run):
    p = os.path.join(out, run, "metrics.jsonl")
    if not os.path.exists(p):
        return []
    recs = []
    for line in open(p):
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if "step" in o and "loss" in o:
            recs.append(o)
    return recs

def world_of(name):
    m = re.search(r"-w(\d+)", name)
    return int(m.group(1)) if m else 1

def ours(name, global_tokens):
    recs = metrics(name)
    w = 1 if "-w1-" in name else world_of(name)
    r = {"run": name, "world": w}
    if not recs:
        r["error"] = failure(name)
        return r
    timed = recs[3:] if len(recs) > 5 else recs  # the first steps warm up
    tps = statistics.median(x["tokens_per_s"] for x in timed)
    step_s = global_tokens / tps
    r.update(steps=len(recs), tokens_per_s=tps, tokens_per_s_per_gpu=tps / w, step_ms=1e3 * step_s,
             ep_share=statistics.median(x["ep_ms"] / 1e3 / (global_tokens / x["tokens_per_s"]) for x in timed),
             first_loss=recs[0]["loss"], last_loss=recs[-1]["loss"], losses=[x["loss"] for x in recs],
             peak_memory_gib=peak_memory(name))
    if rc_of(name) not in (None, "0"):
        r["error"] = failure(name)
    return r

def compare(a, b):
    la, lb = a.get("losses") or [], b.get("losses") or []
    n = min(len(la), len(lb))
    if n == 0:
        return None
    rel = [abs(x - y) / max(abs(y), 1e-12) for x, y in zip(la[:n], lb[:n])]
    worst = max(rel)
    return {"steps": n, "max_rel": worst, "at_step": rel.index(worst) + 1,
            "pass": worst <= BOUND and len(la) == len(lb)}

results = {"ours": [], "torch": [], "ep8": None}
lines = []
cfg_tokens = 2048
for p in sorted(glob.glob(os.path.join(out, "ours-w*.rc")), key=lambda p: world_of(os.path.basename(p))):
    name = os.path.basename(p)[:-3]
    if name.startswith("ours-w1-"):
        continue
    w = world_of(name)
    r = ours(name, w * cfg_tokens)
    ref = ours(f"ours-w1-b{w}", w * cfg_tokens)
    r["equivalence"] = compare(r, ref)
    results["ours"] += [r, ref]
for p in sorted(glob.glob(os.path.join(out, "torch-w*.json"))):
    j = json.load(open(p))
    j["run"] = os.path.basename(p)[:-5]
    results["torch"].append(j)
for p in sorted(glob.glob(os.path.join(out, "torch-w*.rc"))):
    name = os.path.basename(p)[:-3]
    if not any(t["run"] == name for t in results["torch"]):
        results["torch"].append({"run": name, "error": failure(name)})

if results["ours"] or results["torch"]:
    lines.append("4-layer 16B shape (deepseek-v3-16b --layers 4), per rank 1 x 2048 tokens; EP share: djl-moe from "
                 "metrics.jsonl with DJL_MOE_EP_TIMING=device, torch from CUDA events around its all_to_alls")
    lines.append("")
    lines.append("| run | W | tokens/s per GPU | ms/step | EP share | peak GPU memory (GiB, max over GPUs) | loss first -> last | vs W=1 (bound 1e-4) |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results["ours"]:
        label = f"djl-moe fp32, W={r['world']}" if "-w1-" not in r["run"] else f"djl-moe fp32, W=1, global batch of {r['run'].split('-b')[-1]}"
        if "tokens_per_s" not in r:
            lines.append(f"| {label} | {r['world']} | FAILED: {r.get('error', '')} | | | | | |")
            continue
        mem = r.get("peak_memory_gib")
        memtxt = f"{max(mem.values()):.1f}" if mem else ""
        eq = r.get("equivalence")
        eqtxt = "" if eq is None else f"{eq['max_rel']:.2e} at step {eq['at_step']} of {eq['steps']} -> {'PASS' if eq['pass'] else 'FAIL'}"
        if "error" in r:
            eqtxt += f" (run: {r['error'][:120]})"
        lines.append(f"| {label} | {r['world']} | {r['tokens_per_s_per_gpu']:,.0f} | {r['step_ms']:.0f} | "
                     f"{100 * r['ep_share']:.1f}% | {memtxt} | {r['first_loss']:.4f} -> {r['last_loss']:.4f} | {eqtxt} |")
    for t in results["torch"]:
        if "tokens_per_second_per_gpu" not in t:
            lines.append(f"| {t['run']} | {world_of(t['run'])} | FAILED: {t.get('error', '')[:300]} | | | | | |")
            continue
        ls = t.get("losses") or [None]
        lines.append(f"| torch {t['mode']}, W={t['world_size']} | {t['world_size']} | {t['tokens_per_second_per_gpu']:,.0f} | "
                     f"{t['mean_step_ms']:.0f} | {100 * t['ep_share']:.1f}% | "
                     f"{max(t['max_memory_reserved_bytes_per_rank']) / GIB:.1f} (reserved) | "
                     f"{ls[0]:.4f} -> {ls[-1]:.4f} | |")
    lines.append("")

ep8 = metrics("ep8")
if ep8 or rc_of("ep8-train") is not None:
    plan = open(os.path.join(out, "plan8.log")).read() if os.path.exists(os.path.join(out, "plan8.log")) else ""
    m = re.search(r"^\s*total\s+([\d.]+) GiB", plan, re.M) or re.search(r"^\s*total\s+([\d.]+)\s*$", plan, re.M)
    plan_gib = float(m.group(1)) if m else None
    f = re.search(r"^\s*total\s+[\d.]+ [GMT]FLOP\s+([\d.]+) TFLOP", plan, re.M)
    step_tflop = float(f.group(1)) if f else None
    e = {"steps": len(ep8), "plan_gib_per_rank": plan_gib, "plan_step_tflop_per_rank": step_tflop}
    if ep8:
        timed = [x for x in ep8[3:]] or ep8
        tps = statistics.median(x["tokens_per_s"] for x in timed)
        step_s = 8 * 2048 / tps
        e.update(tokens_per_s_per_gpu=tps / 8, step_ms=1e3 * step_s,
                 ep_share=statistics.median(x["ep_ms"] / 1e3 / (8 * 2048 / x["tokens_per_s"]) for x in timed),
                 first_loss=ep8[0]["loss"], last_loss=ep8[-1]["loss"], last_step=ep8[-1]["step"])
        if step_tflop:
            e["mfu_bf16_h100"] = step_tflop * 1e12 / step_s / 989.4e12
    mem = {}
    for n in ("ep8-train", "ep8-resume"):
        for i, v in (peak_memory(n) or {}).items():
            mem[i] = max(mem.get(i, 0.0), v)
    e["peak_memory_gib"] = mem or None
    for n in ("ep8-train", "ep8-resume"):
        log = os.path.join(out, n + ".log")
        if os.path.exists(log):
            text = open(log, errors="replace").read()
            e[n] = {"rc": rc_of(n), "resumed": bool(re.search(r"resumed from", text)),
                    "checkpoint_written": bool(re.search(r"checkpoint: \S*step-\d{8}", text))}
    results["ep8"] = e
    lines.append("Full deepseek-v3-16b, EP=8, --precision fp8, per rank 1 x 2048 tokens (anchor: TorchTitan DeepSeek-V3 16B"
                 " on 8xH100, about 11.3-11.8k tokens/s per GPU, 20% MFU)")
    lines.append("")
    lines.append("| steps | tokens/s per GPU | ms/step | EP share | MFU (bf16 peak, H100 SXM) | peak GPU memory (GiB) | plan (GiB per rank) | loss first -> last | checkpoint / resume |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    if "tokens_per_s_per_gpu" in e:
        ck = ", ".join(f"{n}: exit {v['rc']}{', resumed' if v['resumed'] else ''}{', saved' if v['checkpoint_written'] else ''}"
                       for n, v in e.items() if n.startswith("ep8-") and isinstance(v, dict))
        lines.append(f"| {e['last_step']} | {e['tokens_per_s_per_gpu']:,.0f} | {e['step_ms']:.0f} | {100 * e['ep_share']:.1f}% | "
                     f"{100 * e['mfu_bf16_h100']:.1f}% | {max(mem.values()) if mem else 0:.1f} | {plan_gib} | "
                     f"{e['first_loss']:.4f} -> {e['last_loss']:.4f} | {ck} |" if "mfu_bf16_h100" in e else
                     f"| {e['last_step']} | {e['tokens_per_s_per_gpu']:,.0f} | {e['step_ms']:.0f} | {100 * e['ep_share']:.1f}% | | "
                     f"{max(mem.values()) if mem else 0:.1f} | {plan_gib} | {e['first_loss']:.4f} -> {e['last_loss']:.4f} | {ck} |")
    else:
        lines.append(f"| FAILED: {failure('ep8-train')} | | | | | | {plan_gib} | | |")
    lines.append("")

text = "\n".join(lines) if lines else "no results yet under " + out
print(text)
open(os.path.join(out, "table.md"), "w").write(text + "\n")
with open(os.path.join(out, "results.json"), "w") as fh:
    json.dump(results, fh, indent=2)
    fh.write("\n")
PY
echo "results: $out (table.md, results.json, */metrics.jsonl, *.log); $((SECONDS - start)) s"
exit $status
