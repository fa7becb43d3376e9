"""The torch baseline of `djl-moe bench step`: the same model trained by transformers and torch on
the same GPU, one step at a time, as a user of those libraries would.

The model is transformers' DeepseekV3ForCausalLM built from a config.json that djl-moe wrote
(`djl-moe plan --model deepseek-v3-16b --layers 4 --save-config FILE`), so both sides train the
same shape; both parameter counts are printed. Each step: batch x seq-len uniformly random tokens
(labels = inputs, transformers shifts them), forward, backward, gradient clipping (--clip, as the
djl-moe recipe clips), fused AdamW (torch.optim.AdamW(fused=True); betas, eps and weight decay as
the recipe's), zero_grad, then torch.cuda.synchronize() and the loss read on the host. Warm-up
steps, then timed steps; each timed step is the wall time from the end of the previous one.

--mode bf16: the model (parameters, gradients, AdamW state) in bfloat16.
--mode fp32-tf32: float32 with TF32 matrix products (torch.backends.cuda.matmul.allow_tf32 and
  torch.backends.cudnn.allow_tf32 on).
--mode fp32: float32, TF32 off.

Model FLOPs are djl-moe's count (TrainingPlan: matrix products, 2 FLOPs per multiply-add, a step
= 3 forwards, attention scores over the full sequence), computed here from the config; with
--step-flops (the "step_flops" of djl-moe's JSON) that number is used and the two are compared.
MFU divides the FLOP rate by the GPU's dense bf16 peak (and, printed beside it, the TF32 peak).
Memory: torch.cuda.max_memory_allocated / max_memory_reserved over the training steps, and
total - free of torch.cuda.mem_get_info after them (every context and process on the device).

    python3 torch_train_step.py --config config.json --mode bf16 --json torch-bf16.json
    python3 torch_train_step.py --config config.json --flops-only   # no torch needed
"""
import argparse
import json
import math
import statistics
import sys
import time

# Dense peaks (FLOP/s) by GPU name: (name parts that must all occur, label, bf16, tf32).
# The same table as djl-moe's GpuPeak.
PEAKS = [
    (("H200", "NVL"), "H200 NVL", 835.5e12, 417.5e12),
    (("H200",), "H200 SXM", 989.4e12, 494.7e12),
    (("H100", "PCIE"), "H100 PCIe", 756.5e12, 378.0e12),
    (("H100", "NVL"), "H100 NVL", 835.5e12, 417.5e12),
    (("H100",), "H100 SXM", 989.4e12, 494.7e12),
    (("A100",), "A100", 312.0e12, 156.0e12),
]


def peak_of(name):
    n = name.upper()
    for parts, label, bf16, tf32 in PEAKS:
        if all(p in n for p in parts):
            return label, bf16, tf32
    return None


def forward_flops_per_token(c, seq_len):
    """djl-moe's TrainingPlan.forwardFlopsPerToken for a DeepSeek (MLA) config, summed."""
    if c.get("model_type") not in ("deepseek_v3", "deepseek_v2"):
        raise SystemExit(f"model_type {c.get('model_type')!r}: this baseline builds DeepseekV3ForCausalLM")
    h, n, layers = c["hidden_size"], c["num_attention_heads"], c["num_hidden_layers"]
    dn, dr, dv = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    rkv, rq = c["kv_lora_rank"], c.get("q_lora_rank") or 0
    q = h * rq + rq * n * (dn + dr) if rq > 0 else h * n * (dn + dr)
    proj = q + h * (rkv + dr) + rkv * n * (dn + dv) + n * dv * h
    scores = n * seq_len * (dn + dr) + n * seq_len * dv
    first_dense = c.get("first_k_dense_replace") or 0
    experts, topk = c["n_routed_experts"], c["num_experts_per_tok"]
    shared, width = c.get("n_shared_experts") or 0, c["moe_intermediate_size"]
    dense = router = routed = shared_f = 0
    for i in range(layers):
        if i >= first_dense:
            router += h * experts
            routed += topk * 3 * h * width
            shared_f += shared * 3 * h * width
        else:
            dense += 3 * h * c["intermediate_size"]
    return (2 * proj * layers + 2 * scores * layers + 2 * dense + 2 * router + 2 * routed
            + 2 * shared_f + 2 * h * c["vocab_size"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="config.json written by djl-moe plan --save-config")
    ap.add_argument("--mode", choices=["bf16", "fp32-tf32", "fp32"], default="bf16")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (the recipe's peak)")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip, 0 = off (the recipe's default 1.0)")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (default sdpa; eager: the plain matmul path)")
    ap.add_argument("--experts", default=None, help="experts implementation (eager, grouped_mm, batched_mm; default: transformers' own)")
    ap.add_argument("--step-flops", type=float, default=None, help="model FLOPs per step from djl-moe's JSON")
    ap.add_argument("--peak-tflops", default=None, help="BF16[,TF32] dense peak, default: from the GPU's name")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", default=None, help="write the figures (or the error) here")
    ap.add_argument("--flops-only", action="store_true", help="print the FLOP count and exit (no torch)")
    args = ap.parse_args()
    if args.batch < 1 or args.seq_len < 2 or args.warmup < 1 or args.steps < 1:
        raise SystemExit(f"--batch {args.batch}, --seq-len {args.seq_len}, --warmup {args.warmup}, "
                         f"--steps {args.steps}: need batch >= 1, seq-len >= 2, warmup >= 1, steps >= 1")
    with open(args.config) as f:
        cfg_json = json.load(f)
    fwd = forward_flops_per_token(cfg_json, args.seq_len)
    tokens = args.batch * args.seq_len
    own_step_flops = 3.0 * fwd * tokens
    if args.flops_only:
        print(json.dumps({"forward_flops_per_token": fwd, "step_flops": own_step_flops}))
        return 0
    out = {"benchmark": "torch + transformers", "mode": args.mode, "config": args.config,
           "batch": args.batch, "seq_len": args.seq_len, "tokens_per_step": tokens,
           "warmup_steps": args.warmup, "timed_steps": args.steps,
           "forward_flops_per_token": fwd, "step_flops_own": own_step_flops}
    try:
        run(args, cfg_json, own_step_flops, out)
    except BaseException as e:  # OOM, a missing class, Ctrl-C: the driver's table shows it
        msg = f"{type(e).__name__}: {e}".splitlines()
        out["error"] = " | ".join(m.strip() for m in msg[:3])[:600]
        print(f"torch_train_step ({args.mode}): failed: {out['error']}", file=sys.stderr)
        write(args.json, out)
        return 1
    write(args.json, out)
    return 0


def write(path, out):
    if path:
        with open(path, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


def run(args, cfg_json, own_step_flops, out):
    import torch
    import transformers
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    out.update(device_name=name, torch=torch.__version__, transformers=transformers.__version__)
    if args.mode == "fp32-tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif args.mode == "fp32":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    dtype = torch.bfloat16 if args.mode == "bf16" else torch.float32
    config = DeepseekV3Config.from_json_file(args.config)
    try:
        config._attn_implementation = args.attn
    except (AttributeError, ValueError) as e:  # an unknown name: transformers' default stays
        print(f"  note: attn_implementation {args.attn!r} not taken ({e})")
    if args.experts is not None:
        config._experts_implementation = args.experts
    torch.manual_seed(args.seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with dev:
            model = DeepseekV3ForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    if next(model.parameters()).dtype != dtype:
        model.to(dtype)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for n, b in model.named_buffers() if "e_score_correction_bias" in n)
    out.update(parameters=params, correction_bias_buffers=buffers,
               parameter_dtype=str(next(model.parameters()).dtype),
               tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
               attn_implementation=getattr(model.config, "_attn_implementation", None),
               experts_implementation=getattr(model.config, "_experts_implementation", None))
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {name}; mode {args.mode}")
    print(f"  model: DeepseekV3ForCausalLM from {args.config}, {config.num_hidden_layers} layers, "
          f"{params:,} parameters + {buffers:,} correction-bias buffer elements "
          f"(djl-moe counts the biases as parameters: {params + buffers:,}); "
          f"attention {out['attn_implementation']}, experts {out['experts_implementation']}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=args.weight_decay, fused=True)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    vocab = config.vocab_size
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    step_ms, losses = [], []
    last = time.perf_counter()
    for step in range(args.warmup + args.steps):
        ids = torch.randint(0, vocab, (args.batch, args.seq_len), device=dev, generator=gen)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        losses.append(loss.item())
        now = time.perf_counter()
        if step >= args.warmup:
            step_ms.append((now - last) * 1e3)
            print(f"  step {step + 1}: {step_ms[-1]:.1f} ms, loss {losses[-1]:.4f}")
        last = time.perf_counter()
    free, total = torch.cuda.mem_get_info(dev)
    mean_ms = statistics.fmean(step_ms)
    step_flops = args.step_flops if args.step_flops else own_step_flops
    rate = step_flops / (mean_ms / 1e3)
    if args.peak_tflops:
        parts = [float(x) for x in args.peak_tflops.split(",")]
        peak = ("--peak-tflops", parts[0] * 1e12, (parts[1] if len(parts) > 1 else parts[0] / 2) * 1e12)
    else:
        peak = peak_of(name)
    tokens = args.batch * args.seq_len
    out.update(step_ms=step_ms, mean_step_ms=mean_ms, median_step_ms=statistics.median(step_ms),
               tokens_per_second=tokens / (mean_ms / 1e3), step_flops=step_flops,
               model_tflops_per_second=rate / 1e12,
               peak_gpu=peak[0] if peak else None,
               peak_bf16_tflops=peak[1] / 1e12 if peak else None,
               peak_tf32_tflops=peak[2] / 1e12 if peak else None,
               mfu_bf16_peak=rate / peak[1] if peak else None,
               mfu_tf32_peak=rate / peak[2] if peak else None,
               max_memory_allocated_bytes=torch.cuda.max_memory_allocated(dev),
               max_memory_reserved_bytes=torch.cuda.max_memory_reserved(dev),
               memory_in_use_after_bytes=total - free, memory_total_bytes=total,
               losses=[x if math.isfinite(x) else None for x in losses])
    gib = float(1 << 30)
    print(f"  step time     mean {mean_ms:.1f} ms, median {out['median_step_ms']:.1f} ms over {args.steps} steps")
    print(f"  tokens/s      {out['tokens_per_second']:,.0f}")
    if args.step_flops and abs(args.step_flops - own_step_flops) > 1e-6 * own_step_flops:
        print(f"  WARNING: --step-flops {args.step_flops:.6g} differs from this config's count {own_step_flops:.6g}")
    print(f"  model FLOPs   {step_flops / 1e12:.2f} TFLOP per step; achieved {rate / 1e12:.2f} TFLOP/s")
    if peak:
        print(f"  MFU           {100 * rate / peak[1]:.1f}% of the dense bf16 peak ({peak[1] / 1e12:.1f} TFLOP/s, "
              f"{peak[0]}); {100 * rate / peak[2]:.1f}% of the dense TF32 peak ({peak[2] / 1e12:.1f} TFLOP/s)")
    print(f"  GPU memory    max allocated {out['max_memory_allocated_bytes'] / gib:.2f} GiB, max reserved "
          f"{out['max_memory_reserved_bytes'] / gib:.2f} GiB, in use after (total - free) "
          f"{(total - free) / gib:.2f} GiB of {total / gib:.2f} GiB")


if __name__ == "__main__":
    sys.exit(main())
