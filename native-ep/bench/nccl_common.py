"""Shared by the torch all_to_all_single baselines (nccl_baseline.py, ll_nccl_baseline.py): the
command-line workload, spawning the ranks, a rank's set-up and routed inputs, the timing of a
call (256 MB L2 flush, CUDA events, median) and the gathering of the per-rank results."""
import json
import os
import socket
import statistics

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def add_workload_args(ap, tokens):
    """The options both baselines take; `tokens` is the default tokens per rank."""
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=tokens)
    ap.add_argument("--hidden", type=int, default=7168)
    ap.add_argument("--topk", type=int, default=8)
    ap.add_argument("--experts", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--json", default="")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(worker, args):
    """Runs worker(rank, world, args, port, queue) in args.world processes; returns rank 0's list
    of the per-rank results (see gather_results)."""
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(worker, args=(args.world, args, free_port(), queue), nprocs=args.world, join=True)
    return queue.get()


def init_rank(rank, world, port, device_index):
    """Joins the NCCL process group (NVLink multicast off) on GPU device_index; returns it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NCCL_NVLS_ENABLE="0",
                      TORCH_SYMM_MEM_DISABLE_MULTICAST="1", NVSHMEM_DISABLE_NVLS="1")
    torch.cuda.set_device(device_index)
    dev = torch.device("cuda", device_index)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=dev)
    return dev


def routed_inputs(args, rank, dev):
    """x [T, H] bf16, topk_idx [T, K] (the K largest of |randn| + 1 over E experts) and uniform
    topk_w [T, K], drawn in that order from a generator seeded with 1234 + rank."""
    T, H, K, E = args.tokens, args.hidden, args.topk, args.experts
    g = torch.Generator(device=dev).manual_seed(1234 + rank)
    x = torch.randn(T, H, device=dev, dtype=torch.bfloat16, generator=g)
    scores = torch.randn(T, E, device=dev, generator=g).abs() + 1
    topk_idx = scores.topk(K, dim=-1).indices
    topk_w = torch.rand(T, K, device=dev, generator=g)
    return x, topk_idx, topk_w


def make_timer(dev):
    """timed(fn, warmup, iters): the median in microseconds of iters calls after warmup ones, each
    after a 256 MB L2 flush, between CUDA events."""
    flush = torch.empty(256 << 20, dtype=torch.int8, device=dev)

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

    return timed


def gather_results(rank, world, res, queue):
    """Gathers every rank's result dict to rank 0, which queues the list; ends the group."""
    allres = [None] * world
    dist.all_gather_object(allres, res)
    if rank == 0:
        queue.put(allres)
    dist.barrier()
    dist.destroy_process_group()


def timing_summary(args):
    return {"warmup": args.warmup, "iters": args.iters, "stat": "median per rank, mean over ranks",
            "l2_flush": "256MB"}


def write_json(path, summary):
    if path:
        with open(path, "w") as f:
            json.dump(summary, f, indent=1)
