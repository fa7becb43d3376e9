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

import torch
import torch.distributed as dist

import nccl_common as nc


def worker(rank, world, args, port, queue):
    ndev = torch.cuda.device_count()
    dev = nc.init_rank(rank, world, port, rank % ndev)
    T, H, K, E = args.tokens, args.hidden, args.topk, args.experts
    El = E // world
    x, topk_idx, topk_w = nc.routed_inputs(args, rank, dev)
    topk_w = topk_w + 0.05
    timed = nc.make_timer(dev)

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
    nc.gather_results(rank, world, res, queue)


def main():
    ap = argparse.ArgumentParser()
    nc.add_workload_args(ap, tokens=128)
    args = ap.parse_args()
    allres = nc.spawn_ranks(worker, args)
    mean = lambda key: sum(r[key] for r in allres) / len(allres)
    ndev = torch.cuda.device_count()
    summary = {"ranks": args.world, "devices": min(ndev, args.world),
               "note": "one GPU per rank" if ndev >= args.world else "ranks share a GPU: not NVLink figures",
               "torch": torch.__version__, "nccl": ".".join(map(str, torch.cuda.nccl.version())),
               "workload": {"tokens_per_rank": args.tokens, "hidden": args.hidden, "topk": args.topk, "experts": args.experts,
                            "dispatch_wire": "fp8 1x128", "combine_wire": "bf16"},
               "dispatch_us": mean("dispatch_us"), "combine_us": mean("combine_us"), "per_rank": allres,
               "timing": nc.timing_summary(args)}
    print(f"torch all_to_all_single LL baseline, {args.world} ranks on {summary['devices']} GPU(s): dispatch "
          f"{summary['dispatch_us']:.1f} us, combine {summary['combine_us']:.1f} us, self-check "
          f"{'ok' if all(r['check'] for r in allres) else 'FAILED'} (calc_diff {mean('calc_diff'):.2g})")
    nc.write_json(args.json, summary)


if __name__ == "__main__":
    main()
