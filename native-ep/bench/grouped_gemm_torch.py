"""torch's grouped GEMMs at the 16B expert shape, beside native-ep's gemm_bench (same GPU, same
run): torch._grouped_mm in bf16 and torch._scaled_grouped_mm in FP8 with rowwise scales (one fp32
scale per row of each operand, the recipe torch offers on Hopper), on the same shapes and the same
uneven split of 24,576 rows over 64 experts (H = 2048, I = 1408; gpu-tests/gemm_shapes.h).

The six GEMMs of a SwiGLU expert layer, as gemm_bench times them:
  fwd gate+up  [M, 2I] = x W13^T          fwd down  [M, H] = h W2^T
  dgrad dh = dy W2     dgrad dx = dh13 W13     (M-grouped, the weights transposed)
  wgrad dW2_g = dy_g^T h_g    wgrad dW13_g = dh13_g^T x_g    (grouped along the tokens)
FLOPs are 2 M N K per GEMM. FP8 times exclude the casts (operands are quantised once, outside the
timed loop), as gemm_bench times its GEMMs apart from its quantisers. A GEMM torch refuses
(shape, layout or build limits) is reported with its error and left out of the totals.

    python3 grouped_gemm_torch.py [--reps 20] [--even] [--json torch-grouped.json]
"""
import argparse
import json
import sys

ROWS, EXPERTS, HIDDEN, INTER = 4096 * 6, 64, 2048, 1408


def uneven_split(rows, experts):
    """gemm_shapes.h's uneven_split, integer for integer."""
    weight = [64 + (37 * e) % 64 + (192 if e == 0 else 0) for e in range(experts)]
    total = sum(weight)
    count = [rows * w // total for w in weight]
    given, e = sum(count), 0
    while given < rows:
        count[e % experts] += 1
        given += 1
        e += 1
    return count


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--even", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch

    dev = torch.device("cuda", 0)
    m, g, h, i = ROWS, EXPERTS, HIDDEN, INTER
    split = [m // g] * g if args.even else uneven_split(m, g)
    offs = torch.tensor(split, device=dev, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    name = torch.cuda.get_device_name(dev)
    print(f"grouped_gemm_torch on {name}: {m} rows over {g} experts "
          f"({'even' if args.even else 'uneven'} split, {min(split)}..{max(split)} rows), "
          f"H={h} I={i}, {args.reps} reps, torch {torch.__version__}")
    gen = torch.Generator(device=dev).manual_seed(0)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, device=dev, generator=gen) * scale

    x, hh, dy, dh13 = randn(m, h), randn(m, i), randn(m, h), randn(m, 2 * i)
    w13, w2 = randn(g, 2 * i, h, scale=0.02), randn(g, h, i, scale=0.02)  # [G, N, K]

    def time_us(fn):
        fn()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(args.reps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1000.0 / args.reps

    f13, f2 = 2.0 * m * 2 * i * h, 2.0 * m * h * i
    results = []

    def run(label, flops, fn):
        try:
            us = time_us(fn)
        except Exception as ex:  # a GEMM torch refuses is reported, not fatal
            print(f"  {label:<44} refused: {type(ex).__name__}: {str(ex).splitlines()[0][:160]}")
            results.append({"name": label, "error": str(ex).splitlines()[0][:400]})
            return None
        print(f"  {label:<44} {us:9.1f} us {flops / us / 1e6:8.1f} TFLOP/s")
        results.append({"name": label, "us": round(us, 2), "tflops": round(flops / us / 1e6, 2)})
        return us

    def totals(prefix, t):
        if all(v is not None for v in t):
            up, down, dh, dx, dw2, dw13 = t
            for label, flops, us in (("forward total", f13 + f2, up + down),
                                     ("backward total", 2 * (f13 + f2), dh + dx + dw2 + dw13),
                                     ("forward + backward total", 3 * (f13 + f2), sum(t))):
                print(f"  {prefix + ' ' + label:<44} {us:9.1f} us {flops / us / 1e6:8.1f} TFLOP/s")
                results.append({"name": f"{prefix} {label}", "us": round(us, 2),
                                "tflops": round(flops / us / 1e6, 2)})

    # ---- bf16: torch._grouped_mm (2d x 3d grouped along M; 2d x 2d grouped along the tokens) ----
    bf = torch.bfloat16
    xb, hb, dyb, dhb = x.to(bf), hh.to(bf), dy.to(bf), dh13.to(bf)
    w13b, w2b = w13.to(bf), w2.to(bf)
    gm = torch._grouped_mm
    t = [
        run("bf16 fwd gate+up [M,2I] = x W13^T", f13, lambda: gm(xb, w13b.transpose(-2, -1), offs=offs)),
        run("bf16 fwd down [M,H] = h W2^T", f2, lambda: gm(hb, w2b.transpose(-2, -1), offs=offs)),
        run("bf16 dgrad dh = dy W2", f2, lambda: gm(dyb, w2b, offs=offs)),
        run("bf16 dgrad dx = dh13 W13", f13, lambda: gm(dhb, w13b, offs=offs)),
        run("bf16 wgrad dW2 = dy^T h", f2, lambda: gm(dyb.t(), hb, offs=offs)),
        run("bf16 wgrad dW13 = dh13^T x", f13, lambda: gm(dhb.t(), xb, offs=offs)),
    ]
    totals("bf16", t)

    # ---- FP8 rowwise: torch._scaled_grouped_mm (e4m3, one fp32 scale per row; B column-major) ----
    f8 = torch.float8_e4m3fn

    def rowwise(a):  # a [R, K] -> (e4m3 [R, K], dequantisation scale [R])
        amax = a.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12)
        return (a * (448.0 / amax)).clamp(-448, 448).to(f8), (amax / 448.0).squeeze(-1).float()

    def weight_rowwise(w):  # w [G, N, K] -> (e4m3 [G, N, K], scales [G, N])
        q, s = rowwise(w.reshape(-1, w.shape[-1]))
        return q.reshape(w.shape), s.reshape(w.shape[0], w.shape[1])

    sg = getattr(torch, "_scaled_grouped_mm", None)
    if sg is None:
        print("  torch._scaled_grouped_mm: not in this torch build")
    else:
        qx, sx = rowwise(x)
        qh, sh = rowwise(hh)
        qdy, sdy = rowwise(dy)
        qdh, sdh = rowwise(dh13)
        qw13, sw13 = weight_rowwise(w13)
        qw2, sw2 = weight_rowwise(w2)
        qw13t, sw13t = weight_rowwise(w13.transpose(-2, -1).contiguous())  # [G, H, 2I]
        qw2t, sw2t = weight_rowwise(w2.transpose(-2, -1).contiguous())  # [G, I, H]
        # Weight gradients: operands quantised along the tokens (rows of dy^T, x^T), one scale per
        # (group, row) would need per-group scales; torch's 2d x 2d form takes one per row. Its
        # FP8 K-grouped form needs every group's token count a multiple of 16 (16-byte e4m3
        # rows; a device-side assert otherwise), so each group is padded with zero tokens to 16,
        # as djl-moe's K-grouped operand pads to 128. FLOPs still count the real tokens.
        split16 = [-(-c // 16) * 16 for c in split]
        offs16 = torch.tensor(split16, device=dev, dtype=torch.int32).cumsum(0, dtype=torch.int32)

        def pad_tokens(t):  # [M, C] -> [sum(split16), C], group g's rows at its padded start
            out = torch.zeros(sum(split16), t.shape[1], device=dev, dtype=t.dtype)
            src = dst = 0
            for c, c16 in zip(split, split16):
                out[dst:dst + c] = t[src:src + c]
                src, dst = src + c, dst + c16
            return out

        qdyT, sdyT = rowwise(pad_tokens(dy).t().contiguous())
        qhT, shT = rowwise(pad_tokens(hh).t().contiguous())
        qdhT, sdhT = rowwise(pad_tokens(dh13).t().contiguous())
        qxT, sxT = rowwise(pad_tokens(x).t().contiguous())

        def s(a, b, sa, sb, o=offs):
            return sg(a, b, sa, sb, offs=o, out_dtype=bf, use_fast_accum=True)

        t = [
            run("fp8-rowwise fwd gate+up", f13, lambda: s(qx, qw13.transpose(-2, -1), sx, sw13)),
            run("fp8-rowwise fwd down", f2, lambda: s(qh, qw2.transpose(-2, -1), sh, sw2)),
            run("fp8-rowwise dgrad dh = dy W2", f2, lambda: s(qdy, qw2t.transpose(-2, -1), sdy, sw2t)),
            run("fp8-rowwise dgrad dx = dh13 W13", f13, lambda: s(qdh, qw13t.transpose(-2, -1), sdh, sw13t)),
            run("fp8-rowwise wgrad dW2 = dy^T h", f2,
                lambda: s(qdyT, qhT.t(), sdyT.repeat(g), shT.repeat(g), offs16)),
            run("fp8-rowwise wgrad dW13 = dh13^T x", f13,
                lambda: s(qdhT, qxT.t(), sdhT.repeat(g), sxT.repeat(g), offs16)),
        ]
        totals("fp8-rowwise", t)

    if args.json:
        with open(args.json, "w") as out:
            json.dump({"device": name, "torch": torch.__version__, "rows": m, "experts": g,
                       "hidden": h, "inter": i, "split": "even" if args.even else "uneven",
                       "reps": args.reps, "results": results}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
