"""The baseline a user would write instead of an EP library: dispatch and combine built on
torch.distributed all_to_all_single over NCCL, on the same workload as ep_bench (DeepEP's normal
mode: 4096 tokens per rank, H=7168, top-8 of 256 experts, bf16).

dispatch: layout (which ranks each token goes to), all_to_all_single of the counts, host sync for
the split sizes, permute (rows grouped by destination rank, then token), all_to_all_single of
rows, expert ids and weights, then local ids and zeroed non-local weights.
combine: all_to_all_single back, then index_add_ in fp32 into [T, H], cast to bf16.
Each timed call: 256 MB L2 flush, CUDA events around the call, median of --iters after --warmup.

    python3 nccl_baseline.py --world 2 --json out.json
"""
import argparse

import torch
import torch.distributed as dist

import nccl_common as nc


def worker(rank, world, args, port, queue):
    dev = nc.init_rank(rank, world, port, rank)
    T, H, K, E = args.tokens, args.hidden, args.topk, args.experts
    El = E // world
    x, topk_idx, topk_w = nc.routed_inputs(args, rank, dev)
    timed = nc.make_timer(dev)

    def dispatch():
        in_rank = torch.zeros(T, world, dtype=torch.bool, device=dev)
        in_rank.scatter_(1, topk_idx // El, True)
        counts = in_rank.sum(0)
        dst, tok = in_rank.t().nonzero(as_tuple=True)  # grouped by destination, then token
        recv_counts = torch.empty_like(counts)
        dist.all_to_all_single(recv_counts, counts)
        in_splits, out_splits = counts.tolist(), recv_counts.tolist()  # host sync
        R = sum(out_splits)
        recv_x = torch.empty(R, H, dtype=x.dtype, device=dev)
        dist.all_to_all_single(recv_x, x.index_select(0, tok), out_splits, in_splits)
        recv_idx = torch.empty(R, K, dtype=topk_idx.dtype, device=dev)
        dist.all_to_all_single(recv_idx, topk_idx.index_select(0, tok), out_splits, in_splits)
        recv_w = torch.empty(R, K, dtype=topk_w.dtype, device=dev)
        dist.all_to_all_single(recv_w, topk_w.index_select(0, tok), out_splits, in_splits)
        local = (recv_idx // El) == rank
        recv_idx = torch.where(local, recv_idx - rank * El, -1)
        recv_w = torch.where(local, recv_w, 0.0)
        return recv_x, recv_idx, recv_w, (tok, in_splits, out_splits)

    def combine(y, handle):
        tok, in_splits, out_splits = handle
        back = torch.empty(tok.numel(), H, dtype=y.dtype, device=dev)
        dist.all_to_all_single(back, y, in_splits, out_splits)
        out = torch.zeros(T, H, dtype=torch.float32, device=dev)
        out.index_add_(0, tok, back.float())
        return out.to(torch.bfloat16)

    recv_x, recv_idx, recv_w, handle = dispatch()
    # Check the baseline itself: combine of the received rows = x times the number of ranks visited.
    out = combine(recv_x, handle)
    visits = torch.zeros(T, world, dtype=torch.bool, device=dev)
    visits.scatter_(1, topk_idx // El, True)
    ref = (x.float() * visits.sum(1, keepdim=True).float()).to(torch.bfloat16)
    ok = torch.equal(out, ref) or torch.allclose(out.float(), ref.float(), rtol=1e-2, atol=1e-2)
    dist.barrier()
    d_us = timed(dispatch, args.warmup, args.iters)
    dist.barrier()
    c_us = timed(lambda: combine(recv_x, handle), args.warmup, args.iters)
    res = {"rank": rank, "recv_rows": int(recv_x.shape[0]), "dispatch_us": d_us, "combine_us": c_us, "check": bool(ok)}
    nc.gather_results(rank, world, res, queue)


def main():
    ap = argparse.ArgumentParser()
    nc.add_workload_args(ap, tokens=4096)
    args = ap.parse_args()
    allres = nc.spawn_ranks(worker, args)
    mean = lambda key: sum(r[key] for r in allres) / len(allres)
    summary = {"gpus": args.world, "torch": torch.__version__, "nccl": ".".join(map(str, torch.cuda.nccl.version())),
               "workload": {"tokens_per_rank": args.tokens, "hidden": args.hidden, "topk": args.topk, "experts": args.experts},
               "dispatch_us": mean("dispatch_us"), "combine_us": mean("combine_us"), "per_rank": allres,
               "timing": nc.timing_summary(args)}
    print(f"torch all_to_all_single baseline, {args.world} GPUs: dispatch {summary['dispatch_us']:.1f} us, "
          f"combine {summary['combine_us']:.1f} us, self-check {'ok' if all(r['check'] for r in allres) else 'FAILED'}")
    nc.write_json(args.json, summary)


if __name__ == "__main__":
    main()
