"""The baseline of the low-latency benchmark (ll_bench): one decode step's dispatch and combine
written with torch.distributed all_to_all_single over NCCL, on the same workload (128 tokens per
rank, H=7168, top-8 of 256 experts), with the LL mode's semantics: one message per (token, expert)
pair (no per-rank deduplication), rows grouped by local expert at the receiver, the weighted sum
at the source.

dispatch: FP8 1x128 cast (torch float8_e4m3fn + fp32 scales, sent as bytes), the (token, expert)
pairs sorted by destination rank, all_to_all_single of the counts, host sync for the split sizes,
all_to_all_single of the FP8 rows, the scales and the expert ids, dequantise to bf16.
combine: all_to_all_single of the bf16 rows back, weighted index_add_ in fp32 into [T, H], cast
to bf16. Each timed call: 256 MB L2 flush, CUDA events around the call, median of --iters after
--warmup. Ranks use GPU rank % device_count (on one GPU the ranks time-slice: not NVLink figures).

    python3 ll_nccl_baseline.py --world 2 --json out.json
"""
import argparse
import json
import os
import socket
import statistics

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank, world, args, port, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NCCL_NVLS_ENABLE="0",
                      TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")
    ndev = torch.cuda.device_count()
    torch.cuda.set_device(rank % ndev)
    dev = torch.device("cuda", rank % ndev)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=dev)
    T, H, K, E = args.tokens, args.hidden, args.topk, args.experts
    El = E // world
    g = torch.Generator(device=dev).manual_seed(1234 + rank)
    x = torch.randn(T, H, device=dev, dtype=torch.bfloat16, generator=g)
    scores = torch.randn(T, E, device=dev, generator=g).abs() + 1
    topk_idx = scores.topk(K, dim=-1).indices
    topk_w = torch.rand(T, K, device=dev, generator=g) + 0.05
    flush = torch.empty(256 << 20, dtype=torch.int8, device=dev)

    def fp8_cast(rows):
        blocks = rows.float().view(rows.shape[0], H // 128, 128)
        amax = blocks.abs().amax(-1, keepdim=True).clamp_min(1e-4)
        q = (blocks * (448.0 / amax)).to(torch.float8_e4m3fn)
        return q.view(rows.shape[0], H), (amax / 448.0).view(rows.shape[0], H // 128)

    def dispatch():
        flat = topk_idx.reshape(-1)
        dst = flat // El
        order = torch.argsort(dst * T * K + torch.arange(flat.numel(), device=dev), stable=True)
        tok = order // K
        counts = torch.bincount(dst, minlength=world)
        recv_counts = torch.empty_like(counts)
        dist.all_to_all_single(recv_counts, counts)
        in_splits, out_splits = counts.tolist(), recv_counts.tolist()  # host sync
        R = sum(out_splits)
        q, sc = fp8_cast(x.index_select(0, tok))
        recv_q = torch.empty(R, H, dtype=torch.uint8, device=dev)
        dist.all_to_all_single(recv_q, q.view(torch.uint8), out_splits, in_splits)
        recv_s = torch.empty(R, H // 128, dtype=torch.float32, device=dev)
        dist.all_to_all_single(recv_s, sc, out_splits, in_splits)
        recv_e = torch.empty(R, dtype=flat.dtype, device=dev)
        dist.all_to_all_single(recv_e, flat.index_select(0, order), out_splits, in_splits)
        deq = (recv_q.view(torch.float8_e4m3fn).float().view(R, H // 128, 128) * recv_s.unsqueeze(-1)).view(R, H)
        local = recv_e - rank * El
        perm = torch.argsort(local, stable=True)  # rows grouped by local expert
        return deq.to(torch.bfloat16).index_select(0, perm), (order, perm, in_splits, out_splits)

    def combine(y, handle):
        order, perm, in_splits, out_splits = handle
        back_in = torch.empty_like(y)
        back_in.index_copy_(0, perm, y)
        back = torch.empty(order.numel(), H, dtype=y.dtype, device=dev)
        dist.all_to_all_single(back, back_in, in_splits, out_splits)
        w = topk_w.reshape(-1).index_select(0, order)
        out = torch.zeros(T, H, dtype=torch.float32, device=dev)
        out.index_add_(0, order // K, back.float() * w.unsqueeze(1))
        return out.to(torch.bfloat16)

    def timed(fn, warmup, iters):
        for _ in range(warmup):
            flush.zero_()
            fn()
        times = []
        for _ in range(iters):
            flush.zero_()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1000.0)
        return statistics.median(times)

    recv_x, handle = dispatch()
    out = combine(recv_x, handle)
    ref = x.float() * topk_w.sum(1, keepdim=True)
    diff = 1 - 2 * (out.double() * ref.double()).sum() / (out.double().square() + ref.double().square()).sum()
    ok = float(diff) < 9e-4
    dist.barrier()
    d_us = timed(dispatch, args.warmup, args.iters)
    dist.barrier()
    c_us = timed(lambda: combine(recv_x, handle), args.warmup, args.iters)
    res = {"rank": rank, "recv_rows": int(recv_x.shape[0]), "dispatch_us": d_us, "combine_us": c_us,
           "calc_diff": float(diff), "check": bool(ok)}
    allres = [None] * world
    dist.all_gather_object(allres, res)
    if rank == 0:
        queue.put(allres)
    dist.barrier()
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=7168)
    ap.add_argument("--topk", type=int, default=8)
    ap.add_argument("--experts", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(worker, args=(args.world, args, free_port(), queue), nprocs=args.world, join=True)
    allres = queue.get()
    mean = lambda key: sum(r[key] for r in allres) / len(allres)
    ndev = torch.cuda.device_count()
    summary = {"ranks": args.world, "devices": min(ndev, args.world),
               "note": "one GPU per rank" if ndev >= args.world else "ranks share a GPU: not NVLink figures",
               "torch": torch.__version__, "nccl": ".".join(map(str, torch.cuda.nccl.version())),
               "workload": {"tokens_per_rank": args.tokens, "hidden": args.hidden, "topk": args.topk, "experts": args.experts,
                            "dispatch_wire": "fp8 1x128", "combine_wire": "bf16"},
               "dispatch_us": mean("dispatch_us"), "combine_us": mean("combine_us"), "per_rank": allres,
               "timing": {"warmup": args.warmup, "iters": args.iters, "stat": "median per rank, mean over ranks", "l2_flush": "256MB"}}
    print(f"torch all_to_all_single LL baseline, {args.world} ranks on {summary['devices']} GPU(s): dispatch "
          f"{summary['dispatch_us']:.1f} us, combine {summary['combine_us']:.1f} us, self-check "
          f"{'ok' if all(r['check'] for r in allres) else 'FAILED'} (calc_diff {mean('calc_diff'):.2g})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
