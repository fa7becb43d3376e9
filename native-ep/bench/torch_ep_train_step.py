"""The torch side of the multi-GPU training-step comparison: the model of torch_train_step.py trained
with expert parallelism over the GPUs of one host, one step at a time, as a user of torch would
write it (launched by torchrun, one process per GPU).

    torchrun --nproc-per-node W torch_ep_train_step.py --config config.json --mode bf16 --json out.json

The model is transformers' DeepseekV3ForCausalLM built from a config.json that djl-moe wrote
(`djl-moe plan --model deepseek-v3-16b --layers 4 --save-config FILE`; the committed copy
deepseek-v3-16b-4layers.config.json is the same), with every MoE layer's `mlp` replaced by the
plain torch block below: transformers' MoE module differs between versions (a list of expert
modules in some, fused expert weights in others) and holds every expert on every rank, so sharding
it is awkward. Attention, the dense MLP layers, norms, embedding and LM head stay transformers'.

The MoE block (DeepSeek-V3's, as djl-moe's MoeLayer): router s = sigmoid(u . Wg) in fp32, selection
on s + correction bias (group-limited when n_group > 1), weights = the unbiased s at the chosen
experts, normalised when norm_topk_prob, times routed_scaling_factor; routed experts SwiGLU
W2(silu(W1 u) * W3 u), E / W of them on each rank (contiguous blocks, as djl-moe's); shared experts
one SwiGLU MLP of n_shared_experts * moe_intermediate_size. Token dispatch: each (token, expert)
pair is sorted by expert, the counts are exchanged (all_to_all_single of the per-expert counts),
the rows go to the ranks holding their experts with torch.distributed.all_to_all_single, are
grouped by local expert and run through a loop over the local experts; combine is the reverse
all_to_all_single, then the weighted sum over each token's experts (index_add). The backward of
each all_to_all is the all_to_all with the splits swapped (an autograd.Function). A token goes
once per chosen expert (not once per rank, as DeepEP and djl-moe send it): the plain torch way.

Each step, on every rank: batch x seq-len uniformly random tokens of its own (labels = inputs,
transformers shifts them), forward, backward, gradients averaged as djl-moe's EpTrainer does (the
replicated parameters all-reduced and divided by W, the routed experts' divided by W), global-norm
clipping (--clip) over all ranks' parameters, fused AdamW, the aux-loss-free bias update
(--bias-rate, global expert loads), torch.cuda.synchronize(). No sequence-wise balance loss.
Warm-up steps, then timed steps; a timed step is the wall time from the end of the previous one.
EP time: CUDA events around each all_to_all of the tokens, forward and backward (so the wait for
the slowest rank counts as EP time), summed per step.

--mode bf16: parameters, gradients and AdamW state in bfloat16; --mode fp32-tf32: float32 with TF32
matrix products; --mode fp32: TF32 off. Model FLOPs and MFU as torch_train_step.py (djl-moe's
count, per rank: batch x seq-len tokens). Rank 0 prints and writes the JSON: tokens/s per GPU,
step times, the loss of each step (mean over ranks), EP ms per step and share, memory per rank.
Runs without torchrun too (one rank, no process group).
"""
import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_train_step import forward_flops_per_token, peak_of, write  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="config.json written by djl-moe plan --save-config")
    ap.add_argument("--mode", choices=["bf16", "fp32-tf32", "fp32"], default="bf16")
    ap.add_argument("--batch", type=int, default=1, help="sequences per rank per step")
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate (the recipe's peak)")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip, 0 = off")
    ap.add_argument("--bias-rate", type=float, default=0.001, help="aux-loss-free balancing gamma, 0 = off")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation (default sdpa)")
    ap.add_argument("--peak-tflops", default=None, help="BF16[,TF32] dense peak, default: from the GPU's name")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--timeout-s", type=int, default=120, help="bound of the process group's collectives")
    ap.add_argument("--json", default=None, help="rank 0 writes the figures (or the error) here")
    args = ap.parse_args()
    if args.batch < 1 or args.seq_len < 2 or args.warmup < 1 or args.steps < 1:
        raise SystemExit(f"--batch {args.batch}, --seq-len {args.seq_len}, --warmup {args.warmup}, "
                         f"--steps {args.steps}: need batch >= 1, seq-len >= 2, warmup >= 1, steps >= 1")
    with open(args.config) as f:
        cfg_json = json.load(f)
    fwd = forward_flops_per_token(cfg_json, args.seq_len)
    tokens = args.batch * args.seq_len
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    out = {"benchmark": "torch + transformers, expert parallel (all_to_all_single)", "mode": args.mode,
           "config": args.config, "world_size": world, "batch_per_rank": args.batch,
           "seq_len": args.seq_len, "tokens_per_step_per_rank": tokens,
           "warmup_steps": args.warmup, "timed_steps": args.steps,
           "forward_flops_per_token": fwd, "step_flops_per_rank": 3.0 * fwd * tokens}
    try:
        run(args, cfg_json, out)
    except BaseException as e:  # OOM, a missing class, a peer that died: the driver's table shows it
        msg = f"{type(e).__name__}: {e}".splitlines()
        out["error"] = " | ".join(m.strip() for m in msg[:3])[:600]
        print(f"torch_ep_train_step (rank {rank}, {args.mode}): failed: {out['error']}", file=sys.stderr)
        if rank == 0:
            write(args.json, out)
        return 1
    if rank == 0:
        write(args.json, out)
    return 0


def run(args, cfg_json, out):
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    import transformers
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local % torch.cuda.device_count())
    dev = torch.device("cuda", torch.cuda.current_device())
    if world > 1:
        dist.init_process_group("nccl", timeout=datetime.timedelta(seconds=args.timeout_s),
                                device_id=dev)
    name = torch.cuda.get_device_name(dev)
    nccl = torch.cuda.nccl.version() if world > 1 else None
    out.update(device_name=name, torch=torch.__version__, transformers=transformers.__version__,
               nccl=".".join(str(v) for v in nccl) if isinstance(nccl, tuple) else nccl)
    if args.mode == "fp32-tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif args.mode == "fp32":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    dtype = torch.bfloat16 if args.mode == "bf16" else torch.float32

    E = cfg_json["n_routed_experts"]
    if E % world != 0:
        raise ValueError(f"n_routed_experts {E} is not a multiple of the world size {world}")
    El = E // world
    ep_events = []  # (start, end) CUDA events around each token all_to_all of this step

    class AllToAll(torch.autograd.Function):
        """all_to_all_single of rows; its backward is the same exchange with the splits swapped."""

        @staticmethod
        def forward(ctx, x, out_splits, in_splits):
            ctx.splits = (out_splits, in_splits)
            return exchange(x, out_splits, in_splits)

        @staticmethod
        def backward(ctx, g):
            out_splits, in_splits = ctx.splits
            return exchange(g, in_splits, out_splits), None, None

    def exchange(x, out_splits, in_splits):
        x = x.contiguous()
        y = x.new_empty((sum(out_splits), x.shape[1]))
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dist.all_to_all_single(y, x, out_splits, in_splits)
        end.record()
        ep_events.append((start, end))
        return y

    class SwiGlu(torch.nn.Module):
        def __init__(self, hidden, width):
            super().__init__()
            self.gate_proj = torch.nn.Linear(hidden, width, bias=False)
            self.up_proj = torch.nn.Linear(hidden, width, bias=False)
            self.down_proj = torch.nn.Linear(width, hidden, bias=False)

        def forward(self, x):
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    class EpMoe(torch.nn.Module):
        """DeepSeek-V3's MoE block with this rank's E / W routed experts."""

        def __init__(self, c, layer):
            super().__init__()
            h, width = c.hidden_size, c.moe_intermediate_size
            self.k, self.groups, self.topk_group = c.num_experts_per_tok, c.n_group or 1, c.topk_group or 1
            self.norm, self.scale = c.norm_topk_prob, c.routed_scaling_factor
            self.gate = torch.nn.Parameter(torch.empty(E, h))
            self.register_buffer("bias", torch.zeros(E, dtype=torch.float32))
            self.w1 = torch.nn.Parameter(torch.empty(El, width, h))
            self.w3 = torch.nn.Parameter(torch.empty(El, width, h))
            self.w2 = torch.nn.Parameter(torch.empty(El, h, width))
            for p in (self.w1, self.w2, self.w3):
                p.is_expert = True
            std = c.initializer_range
            with torch.no_grad():
                self.gate.normal_(0.0, std)
                for e in range(El):  # each expert from its own seed: the same model at any W
                    g = torch.Generator(device=self.w1.device).manual_seed(
                        args.seed * 1_000_003 + layer * E + rank * El + e)
                    for w in (self.w1, self.w3, self.w2):
                        w[e].normal_(0.0, std, generator=g)
            shared = (c.n_shared_experts or 0) * width
            self.shared = SwiGlu(h, shared) if shared > 0 else None
            self.load = None

        def route(self, u):
            s = torch.sigmoid(u.float() @ self.gate.float().t())  # [T, E]
            biased = s + self.bias
            if self.groups > 1:
                T = biased.shape[0]
                g = biased.view(T, self.groups, -1).topk(2, dim=-1).values.sum(-1)
                keep = torch.zeros_like(g).scatter_(1, g.topk(self.topk_group, dim=-1).indices, 1.0)
                mask = keep.repeat_interleave(E // self.groups, dim=1) > 0
                biased = biased.masked_fill(~mask, float("-inf"))
            idx = biased.topk(self.k, dim=-1).indices
            w = s.gather(1, idx)
            if self.norm:
                w = w / (w.sum(-1, keepdim=True) + 1e-20)
            return idx, w * self.scale

        def forward(self, hidden):
            shape = hidden.shape
            u = hidden.reshape(-1, shape[-1])
            T = u.shape[0]
            idx, w = self.route(u)
            flat = idx.reshape(-1)
            order = torch.argsort(flat, stable=True)
            tok = order // self.k
            counts = torch.bincount(flat, minlength=E)  # rows this rank sends to each expert
            self.load = counts.detach()
            if world > 1:
                recv_counts = torch.empty_like(counts)
                dist.all_to_all_single(recv_counts, counts)  # [source rank, local expert]
            else:
                recv_counts = counts
            send_splits = counts.view(world, El).sum(1).tolist()
            rc = recv_counts.view(world, El)
            recv_splits = rc.sum(1).tolist()
            per_expert = rc.sum(0).tolist()
            rows = u[tok]
            # by source rank, then local expert
            recv = rows if world == 1 else AllToAll.apply(rows, recv_splits, send_splits)
            row_expert = torch.repeat_interleave(
                torch.arange(El, device=u.device).repeat(world), recv_counts)
            perm = torch.argsort(row_expert, stable=True)
            xg = recv[perm]
            ys, start = [], 0
            for e, n in enumerate(per_expert):
                x = xg[start:start + n]
                ys.append((F.silu(x @ self.w1[e].t()) * (x @ self.w3[e].t())) @ self.w2[e].t())
                start += n
            yg = torch.cat(ys) if ys else xg
            y = yg[torch.argsort(perm)]
            back = y if world == 1 else AllToAll.apply(y, send_splits, recv_splits)  # order's order
            wk = w.reshape(-1)[order].to(back.dtype)
            routed = torch.zeros_like(u).index_add(0, tok, back * wk[:, None])
            if self.shared is not None:
                routed = routed + self.shared(u)
            return routed.view(shape)

    config = DeepseekV3Config.from_json_file(args.config)
    try:
        config._attn_implementation = args.attn
    except (AttributeError, ValueError) as e:
        print(f"  note: attn_implementation {args.attn!r} not taken ({e})")
    torch.manual_seed(args.seed)  # the same replicated weights on every rank
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with dev:
            model = DeepseekV3ForCausalLM(config)
            first_dense = config.first_k_dense_replace or 0
            moes = []
            for i, layer in enumerate(model.model.layers):
                if i >= first_dense:
                    layer.mlp = EpMoe(config, i)
                    moes.append(layer.mlp)
    finally:
        torch.set_default_dtype(previous)
    model.to(dtype)
    for m in moes:
        m.bias.data = m.bias.data.float()
    torch.cuda.empty_cache()
    model.train()
    experts = [p for p in model.parameters() if getattr(p, "is_expert", False)]
    dense = [p for p in model.parameters() if not getattr(p, "is_expert", False)]
    n_dense, n_expert = sum(p.numel() for p in dense), sum(p.numel() for p in experts)
    out.update(parameters_per_rank=n_dense + n_expert, replicated_parameters=n_dense,
               expert_parameters_per_rank=n_expert, parameter_dtype=str(dtype),
               tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
               attn_implementation=getattr(model.config, "_attn_implementation", None))
    if rank == 0:
        print(f"torch {torch.__version__}, transformers {transformers.__version__}, {name} x {world}; "
              f"mode {args.mode}")
        print(f"  model: DeepseekV3ForCausalLM from {args.config}, {config.num_hidden_layers} layers "
              f"({len(moes)} MoE, plain EP block), {n_dense:,} replicated + {n_expert:,} expert "
              f"parameters per rank ({El} of {E} experts)")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=args.weight_decay, fused=True)
    gen = torch.Generator(device=dev).manual_seed(args.seed + 7919 * rank)
    vocab = config.vocab_size
    tokens = args.batch * args.seq_len
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step_ms, losses, ep_ms = [], [], []
    if world > 1:
        dist.barrier()
    last = time.perf_counter()
    for step in range(args.warmup + args.steps):
        ep_events.clear()
        ids = torch.randint(0, vocab, (args.batch, args.seq_len), device=dev, generator=gen)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        with torch.no_grad():
            grads = [p.grad for p in dense if p.grad is not None]
            if world > 1:
                works = [dist.all_reduce(g, async_op=True) for g in grads]
                for wk in works:
                    wk.wait()
                for g in grads:
                    g.div_(world)
                for p in experts:
                    if p.grad is not None:
                        p.grad.div_(world)
            sq_dense = sum((g.float().pow(2).sum() for g in grads), torch.zeros((), device=dev))
            sq_expert = sum((p.grad.float().pow(2).sum() for p in experts if p.grad is not None),
                            torch.zeros((), device=dev))
            if world > 1:
                dist.all_reduce(sq_expert)
            norm = torch.sqrt(sq_dense + sq_expert)
            if args.clip > 0:
                factor = torch.clamp(args.clip / (norm + 1e-6), max=1.0)
                for p in model.parameters():
                    if p.grad is not None:
                        p.grad.mul_(factor.to(p.grad.dtype))
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            if args.bias_rate > 0:
                loads = torch.stack([m.load for m in moes]).float()
                if world > 1:
                    dist.all_reduce(loads)
                for m, load in zip(moes, loads):
                    m.bias.add_(args.bias_rate * torch.sign(load.mean() - load))
            lv = loss.detach().float().reshape(1)
            if world > 1:
                dist.all_reduce(lv)
        torch.cuda.synchronize()
        losses.append(lv.item() / world)
        ep = sum(s.elapsed_time(e) for s, e in ep_events)
        now = time.perf_counter()
        if step >= args.warmup:
            step_ms.append((now - last) * 1e3)
            ep_ms.append(ep)
            if rank == 0:
                print(f"  step {step + 1}: {step_ms[-1]:.1f} ms, EP {ep:.1f} ms, loss {losses[-1]:.4f}")
        elif rank == 0:
            print(f"  warm-up step {step + 1}: loss {losses[-1]:.4f}")
        last = time.perf_counter()
    free, total = torch.cuda.mem_get_info(dev)
    mine = torch.tensor([torch.cuda.max_memory_allocated(dev), torch.cuda.max_memory_reserved(dev),
                         total - free], dtype=torch.float64, device=dev)
    if world > 1:
        every = [torch.zeros_like(mine) for _ in range(world)]
        dist.all_gather(every, mine)
        times = torch.tensor([statistics.fmean(step_ms)], dtype=torch.float64, device=dev)
        all_times = [torch.zeros_like(times) for _ in range(world)]
        dist.all_gather(all_times, times)
    else:
        every, all_times = [mine], [torch.tensor([statistics.fmean(step_ms)])]
    mem = [[int(v) for v in t.tolist()] for t in every]
    mean_ms = statistics.fmean(step_ms)
    step_flops = out["step_flops_per_rank"]
    rate = step_flops / (mean_ms / 1e3)
    if args.peak_tflops:
        parts = [float(x) for x in args.peak_tflops.split(",")]
        peak = ("--peak-tflops", parts[0] * 1e12, (parts[1] if len(parts) > 1 else parts[0] / 2) * 1e12)
    else:
        peak = peak_of(name)
    out.update(step_ms=step_ms, mean_step_ms=mean_ms, median_step_ms=statistics.median(step_ms),
               mean_step_ms_per_rank=[float(t.item()) for t in all_times],
               tokens_per_second_per_gpu=tokens / (mean_ms / 1e3),
               tokens_per_second=world * tokens / (mean_ms / 1e3),
               ep_ms=ep_ms, ep_share=statistics.fmean(ep_ms) / mean_ms,
               model_tflops_per_second_per_gpu=rate / 1e12,
               peak_gpu=peak[0] if peak else None,
               mfu_bf16_peak=rate / peak[1] if peak else None,
               mfu_tf32_peak=rate / peak[2] if peak else None,
               max_memory_allocated_bytes_per_rank=[m[0] for m in mem],
               max_memory_reserved_bytes_per_rank=[m[1] for m in mem],
               memory_in_use_after_bytes_per_rank=[m[2] for m in mem],
               memory_total_bytes=total,
               losses=[x if math.isfinite(x) else None for x in losses])
    if rank == 0:
        gib = float(1 << 30)
        print(f"  step time     mean {mean_ms:.1f} ms, median {out['median_step_ms']:.1f} ms over "
              f"{args.steps} steps (rank 0); EP {100 * out['ep_share']:.1f}% of the step")
        print(f"  tokens/s      {out['tokens_per_second_per_gpu']:,.0f} per GPU, "
              f"{out['tokens_per_second']:,.0f} over {world}")
        if peak:
            print(f"  MFU           {100 * rate / peak[1]:.1f}% of the dense bf16 peak ({peak[0]})")
        print(f"  GPU memory    max allocated {max(m[0] for m in mem) / gib:.2f} GiB, in use after "
              f"{max(m[2] for m in mem) / gib:.2f} GiB (largest rank) of {total / gib:.2f} GiB")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
