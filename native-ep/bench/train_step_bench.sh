#!/usr/bin/env bash
# The training-step benchmark on a GPU host, in one command (fits a 600 s limit on an H100):
# djl-moe's training step against transformers + torch on the same GPU, same model, same run.
#
#   native-ep/bench/train_step_bench.sh [--carry DIR] [--out DIR] [--warmup N] [--steps N]
#                                       [--budget SECONDS] [--python PY] [--ab-adamw] [--no-fp8]
#                                       [--profile]
#
#   1. DJL's JNI against the host's torch (bin/build-djl-jni build --src DIR/djl-jni-src), as
#      bin/gpu-train-check does;
#   2. the model's config.json from djl-moe (plan --model deepseek-v3-16b --layers 4
#      --save-config), so both sides train the same shape (1 dense + 3 MoE layers, 2.25 B
#      parameters); if that fails, the copy committed beside this script (a test keeps it equal);
#   3. djl-moe bench step --device gpu, fp32 with TF32 off, then fp32 with
#      TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 (batch 1 x 4096 random tokens, AdamW, the recipe's step),
#      then --precision fp8 with TF32 (FP8 wire and the routed experts' grouped FP8 GEMMs; the
#      FP8 GEMMs issue compares it with torch bf16; --no-fp8 leaves it out); with --profile the
#      fp32 + TF32 run also profiles two extra steps (bench step --profile: the step's phases with
#      the device waited for at each boundary, libtorch's operator trace), packed into
#      DIR/profile-tf32.tgz (phases.txt, ops.txt, trace.json), its phases and top operators printed
#      after the table;
#   4. torch_train_step.py on that config.json: bf16, then fp32 with TF32 (fused AdamW);
#   5. the tiny model, djl-moe bench step on the GPU and on the CPU (16 x 64 tokens);
#      with --ab-adamw first also djl-moe fp32 + TF32 with DJL_MOE_FUSED_ADAMW=0 (the engine's
#      own AdamW instead of the one-pass kernel), to see what the optimizer costs;
#   6. one Markdown table: ms/step, tokens/s, MFU (dense bf16 and TF32 peaks), GPU memory, and the
#      tokens/s ratios ours / torch fp32+TF32 and ours / torch bf16; a part that failed or ran out
#      of time shows its error instead of figures, the other rows stand.
#
# Every part runs under `timeout`: the smaller of its own cap and what the budget (default 560 s)
# leaves after the least time kept for the parts after it (caps / kept minimums, s: JNI 150/-,
# plan 40/20, each djl-moe run 150/60, each torch run 120/60, each tiny run 60/30). --carry DIR is a folder made by
# native-ep/bench/make_gpucarry.sh --djl (jre/, lib/, djl-jni-src/); without it the local JDK, the
# project's build and an already set-up DJL JNI are used. Results: DIR/*.json and DIR/*.log
# (default /tmp/train-step-bench), and DIR/profile-tf32.tgz with --profile. Exit 0 when every part
# gave figures.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/native-ep/bench"
carry="" out="${OUT:-/tmp/train-step-bench}" warmup=3 steps=5 budget=560 python=python3 ab=0 fp8=1
profile=0
while [ $# -gt 0 ]; do
  case "$1" in
    --carry) carry=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --ab-adamw) ab=1; shift ;;
    --no-fp8) fp8=0; shift ;;
    --profile) profile=1; shift ;;
    -h|--help) sed -n '2,36p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "train_step_bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
export DJL_OFFLINE=true OPT_OUT_TRACKING=true
unset TORCH_ALLOW_TF32_CUBLAS_OVERRIDE
mkdir -p "$out"
rm -f "$out"/*.json "$out"/*.log "$out"/*.rc "$out/profile-tf32.tgz"
rm -rf "$out/profile-tf32"
start=$SECONDS

# part NAME CAP KEEP CMD...: runs CMD with a timeout of min(CAP, time left - KEEP), output in
# NAME.log, exit status in NAME.rc (124: timed out; 'skipped' when no time was left).
part() {
  local name=$1 cap=$2 keep=$3
  shift 3
  local left=$((budget - (SECONDS - start) - keep))
  local t=$((cap < left ? cap : left))
  if [ "$t" -lt 15 ]; then
    echo "skipped: $t s left of the ${budget} s budget" > "$out/$name.log"
    echo skipped > "$out/$name.rc"
    echo "$name: skipped (no time left)"
    return 1
  fi
  local t0=$SECONDS
  timeout -k 10 "$t" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$rc" > "$out/$name.rc"
  echo "$name: exit $rc after $((SECONDS - t0)) s (limit $t s)"
  return $rc
}

# 1. DJL's JNI and the Java command.
java_ok=1
if [ -n "$carry" ]; then
  if part jni 150 400 "$root/bin/build-djl-jni" build --src "$carry/djl-jni-src" --cache "${DJL_CACHE_DIR:-/tmp/djlcache}"; then
    eval "$(grep -E '^export ' "$out/jni.log")"
  else
    java_ok=0
  fi
  java=("$carry/jre/bin/java" -cp "$carry/lib/*")
else
  java=(java -cp "$root/recipes/target/recipes-0.1.0-SNAPSHOT.jar:$root/recipes/target/lib/*")
fi
djl=("${java[@]}" -Xmx16g -Dai.djl.offline=true dev.djlmoe.recipes.cli.Main)
shape=(--batch 1 --seq-len 4096 --warmup "$warmup" --steps "$steps")

# 2. The config.json both sides train.
config="$out/config.json"
part plan 40 380 "${djl[@]}" plan --model deepseek-v3-16b --layers 4 --ep 1 --batch 1 --seq-len 4096 \
  --precision fp32 --save-config "$config"
if [ ! -s "$config" ]; then
  cp "$here/deepseek-v3-16b-4layers.config.json" "$config"
  echo "plan: failed; using the committed $here/deepseek-v3-16b-4layers.config.json"
fi

# 3. djl-moe on the GPU: fp32 with TF32 off, then on, then the fp8 precision (TF32 on).
step=(bench step --model deepseek-v3-16b --layers 4 --device gpu "${shape[@]}")
if [ "$java_ok" = 1 ]; then
  part ours-fp32 150 340 "${djl[@]}" "${step[@]}" --json "$out/ours-fp32.json"
  prof=()
  [ "$profile" = 1 ] && prof=(--profile "$out/profile-tf32")
  part ours-tf32 150 240 env TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 "${djl[@]}" "${step[@]}" ${prof[@]+"${prof[@]}"} \
    --json "$out/ours-tf32.json"
  if [ -d "$out/profile-tf32" ]; then
    # One file instead of three (the trace is a few MB of JSON).
    tar -czf "$out/profile-tf32.tgz" -C "$out" profile-tf32 && rm -rf "$out/profile-tf32"
  fi
  if [ "$fp8" = 1 ]; then
    part ours-fp8 150 180 env TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 "${djl[@]}" "${step[@]}" --precision fp8 \
      --json "$out/ours-fp8.json"
  fi
else
  for n in ours-fp32 ours-tf32; do echo "DJL's JNI did not build: $(tail -3 "$out/jni.log" | tr '\n' ' ')" > "$out/$n.log"; done
fi

# 4. torch + transformers on the same GPU and config.
flops=$("$python" -c "import json,sys; print(json.load(open(sys.argv[1]))['step_flops'])" "$out/ours-fp32.json" 2>/dev/null || true)
torch_args=(--config "$config" "${shape[@]}")
[ -n "$flops" ] && torch_args+=(--step-flops "$flops")
part torch-bf16 120 120 "$python" "$here/torch_train_step.py" "${torch_args[@]}" --mode bf16 --json "$out/torch-bf16.json"
part torch-tf32 120 60 "$python" "$here/torch_train_step.py" "${torch_args[@]}" --mode fp32-tf32 --json "$out/torch-tf32.json"

# 5. Optionally the engine's AdamW for comparison, then the tiny model on the GPU and on the CPU.
if [ "$java_ok" = 1 ] && [ "$ab" = 1 ]; then
  part ours-tf32-engine-adamw 150 60 env TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 DJL_MOE_FUSED_ADAMW=0 \
    "${djl[@]}" "${step[@]}" --json "$out/ours-tf32-engine-adamw.json"
fi
tiny=(bench step --model tiny --layers 0 --batch 16 --seq-len 64 --warmup 2 --steps 5)
if [ "$java_ok" = 1 ]; then
  part tiny-gpu 60 30 "${djl[@]}" "${tiny[@]}" --device gpu --json "$out/tiny-gpu.json"
  part tiny-cpu 60 0 "${djl[@]}" "${tiny[@]}" --device cpu --json "$out/tiny-cpu.json"
fi

# 6. The table.
echo
"$python" - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
def load(name):
    p = os.path.join(out, name + ".json")
    j = json.load(open(p)) if os.path.exists(p) else {}
    if "tokens_per_second" not in j and "error" not in j:
        rc = open(os.path.join(out, name + ".rc")).read().strip() if os.path.exists(os.path.join(out, name + ".rc")) else "not run"
        log = os.path.join(out, name + ".log")
        tail = [l.strip() for l in open(log, errors="replace")] if os.path.exists(log) else []
        tail = [l for l in tail if l][-2:]
        why = "timed out" if rc in ("124", "137") else "not run" if rc in ("skipped", "not run") else f"exit {rc}"
        j["error"] = why + (": " + " | ".join(tail) if tail else "")
    return j
rows = [("djl-moe fp32 (TF32 off)", "ours-fp32"), ("djl-moe fp32 + TF32", "ours-tf32"),
        ("torch bf16", "torch-bf16"), ("torch fp32 + TF32", "torch-tf32"),
        ("djl-moe tiny, GPU", "tiny-gpu"), ("djl-moe tiny, CPU", "tiny-cpu")]
if os.path.exists(os.path.join(out, "ours-tf32-engine-adamw.rc")):
    rows.insert(2, ("djl-moe fp32 + TF32, engine AdamW", "ours-tf32-engine-adamw"))
if os.path.exists(os.path.join(out, "ours-fp8.rc")):
    rows.insert(2, ("djl-moe fp8 (FP8 wire + FP8 expert GEMMs) + TF32", "ours-fp8"))
r = {k: load(k) for _, k in rows}
gib = float(1 << 30)
def f(v, fmt):
    return "" if v is None else fmt.format(v)
def tps(k):
    return r[k].get("tokens_per_second")
def ratio(a, b):
    return f"{tps(a) / tps(b):.2f}" if tps(a) and tps(b) else ""
any_r = next((r[k] for _, k in rows[:4] if r[k].get("device_name")), r["tiny-gpu"])
print(f"Training step, batch {any_r.get('batch', 1)} x {any_r.get('seq_len', 4096)} tokens, "
      f"{any_r.get('warmup_steps', '?')} warm-up + {any_r.get('timed_steps', '?')} timed steps; "
      f"GPU: {any_r.get('device_name', '?')}")
print()
print("| run | ms/step | tokens/s | MFU (bf16 peak) | MFU (TF32 peak) | GPU memory | / torch fp32+TF32 | / torch bf16 |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for label, k in rows:
    j = r[k]
    if "tokens_per_second" not in j:
        print(f"| {label} | FAILED: {j['error'][:300]} | | | | | | |")
        continue
    if k.startswith("torch"):
        mem = (f"max alloc {j['max_memory_allocated_bytes'] / gib:.1f} / reserved "
               f"{j['max_memory_reserved_bytes'] / gib:.1f} / in use {j['memory_in_use_after_bytes'] / gib:.1f} GiB")
    elif j.get("memory_in_use_after_bytes") is not None:
        mem = f"in use {j['memory_in_use_after_bytes'] / gib:.1f} GiB (before model {j['memory_in_use_before_bytes'] / gib:.1f})"
    else:
        mem = "(CPU)"
    vs_tf32 = ratio(k, "torch-tf32") if k.startswith("ours") else ""
    vs_bf16 = ratio(k, "torch-bf16") if k.startswith("ours") else ""
    if k == "tiny-gpu":
        vs_tf32 = f"GPU / CPU: {ratio('tiny-gpu', 'tiny-cpu')}"
    mfu_b = j.get("mfu_bf16_peak")
    mfu_t = j.get("mfu_tf32_peak")
    print(f"| {label} | {j['mean_step_ms']:.1f} | {j['tokens_per_second']:,.0f} | {f(mfu_b and 100 * mfu_b, '{:.1f}%')} "
          f"| {f(mfu_t and 100 * mfu_t, '{:.1f}%')} | {mem} | {vs_tf32} | {vs_bf16} |")
print()
o, t = r["ours-fp32"], r["torch-bf16"] if "parameters" in r["torch-bf16"] else r["torch-tf32"]
if "parameters" in o and "parameters" in t:
    same = o["parameters"] == t["parameters"] + t.get("correction_bias_buffers", 0)
    print(f"parameters: djl-moe {o['parameters']:,}; transformers {t['parameters']:,} + "
          f"{t.get('correction_bias_buffers', 0):,} correction-bias buffer elements"
          f" -> {'the same model size' if same else 'DIFFERENT'}")
if "step_flops" in o:
    print(f"model FLOPs per step: {o['step_flops'] / 1e12:.2f} TFLOP (djl-moe's TrainingPlan; the torch rows use the same number)")
for k in ("torch-bf16", "torch-tf32"):
    if r[k].get("experts_implementation") is not None or r[k].get("attn_implementation"):
        print(f"{k}: attention {r[k].get('attn_implementation')}, experts {r[k].get('experts_implementation')}, "
              f"torch {r[k].get('torch')}, transformers {r[k].get('transformers')}")
print("GPU memory: djl-moe = cudaMemGetInfo total - free after the timed steps (libtorch's caching allocator's"
      " peak reservation + CUDA context + workspaces + the 1 GiB EP buffer); torch = max_memory_allocated /"
      " max_memory_reserved over the steps / total - free after them")
for _, k in rows:
    if "fused_adamw" in r[k]:
        print(f"{k}: AdamW {'one pass per parameter' if r[k]['fused_adamw'] else 'the engine adamUpdate'}")
prof = r["ours-tf32"].get("profile")
if prof and "error" in prof:
    print(f"\nProfile of djl-moe fp32 + TF32: failed: {prof['error']}")
elif prof:
    print()
    print(f"Profile of djl-moe fp32 + TF32 (profile-tf32.tgz: phases.txt, ops.txt, trace.json): phase step "
          f"{prof['phase_step_ms']:.1f} ms, the device waited for at each phase boundary")
    ph = prof["phases"]
    wall = prof["phase_step_ms"]
    def summed(prefix):
        import re
        s = {}
        for p in ph:
            if p["path"].startswith(prefix + "/"):
                k = re.sub(r"layer \d+[/.]", "", p["path"][len(prefix) + 1:])
                if re.fullmatch(r"layer \d+", k):
                    continue
                s[k] = s.get(k, 0.0) + p["ms"]
        return s
    for p in ph:
        if "/" not in p["path"]:
            print(f"  {p['path']:<40} {p['ms']:9.1f} ms {100 * p['ms'] / wall:5.1f}%")
            if p["path"] in ("forward", "backward"):
                for k, v in summed(p["path"]).items():
                    print(f"    {k[:38]:<38} {v:9.1f} ms {100 * v / wall:5.1f}%")
    print(f"  {'outside the trainer step':<40} {prof['outside_trainer_ms']:9.1f} ms")
    print(f"Top torch operators (host self time; a second extra step under the profiler, "
          f"{prof['operator_step_ms']:.1f} ms; host time in operators {prof['host_ms_in_operators']:.1f} ms "
          f"over {prof.get('host_threads', '?')} threads):")
    for o in prof["ops"][:10]:
        print(f"  {o['name'][:48]:<48} {o['calls']:6d} calls {o['self_ms']:9.2f} ms {100 * o['share_of_step']:5.1f}%")
sys.exit(0 if all("tokens_per_second" in r[k] for _, k in rows) else 1)
PY
status=$?
echo "results: $out (*.json, *.log$([ "$profile" = 1 ] && echo ', profile-tf32.tgz')); $((SECONDS - start)) s"
exit $status
