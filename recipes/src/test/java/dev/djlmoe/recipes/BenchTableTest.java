/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.djlmoe.recipes.bench.BenchTable;
import dev.djlmoe.recipes.bench.MoeLayerBench;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

/** {@code bench}'s one table reads the EP benchmark's report and the MoE layer's figures. */
class BenchTableTest {

    static final String EP_REPORT =
            String.join(
                    "\n",
                    "EP benchmark: W=2 ranks on one host (cpu-shm), 2 CPU cores",
                    "memcpy, all ranks copying at once: 5.12 GB/s per rank (min 5.00, max 5.20)",
                    "shape: 4096 tokens/rank, H=7168, top-8 of 256 experts (128 per rank), uniform"
                            + " routing; rows per rank: sent 4096, received 4096 (mean), 5 timed"
                            + " iterations",
                    "wire   op         time ms   payload     GB/s  bound ms   ratio",
                    "fp32   dispatch      90.1     117MB     1.30      60.2    0.67",
                    "fp32   +notify       95.3     117MB     1.23      60.2    0.63",
                    "fp32   combine       88.0     117MB     1.33      65.0    0.74",
                    "fp32   no-peer       40.0 ms with a reused output, 70.0 ms with a fresh one",
                    "mxfp8  dispatch      30.5      30MB     0.98      35.1    1.15",
                    "training step (tiny model, global batch 16 x 64 tokens, W=2): 6000 tokens/s,"
                            + " EP dispatch+combine 21.5% of step time (steps 6-30 of 30)",
                    "");

    @Test
    void oneTableFromBothBenchmarks() {
        BenchTable t = new BenchTable();
        assertEquals(5, t.addEpReport(EP_REPORT));
        t.addLayer(
                new MoeLayerBench.Size(4096, 1024, 64, 6, 512, 5, true),
                new MoeLayerBench.Result(1.713, 2392, 135e9, 198e9, 0.69, 24.66, 14.4));
        ByteArrayOutputStream buf = new ByteArrayOutputStream();
        t.print(new PrintStream(buf, true, StandardCharsets.UTF_8));
        String s = buf.toString(StandardCharsets.UTF_8);
        assertEquals(2 + 7, s.strip().split("\n").length, s);
        assertTrue(
                s.contains(
                        "| EP dispatch fp32, W=2 | T=4096/rank H=7168 top-8 of 256 | 90.1 ms"
                                + " | 1.30 GB/s (117 MB) | 0.67 of memcpy bound (60.2 ms) |"),
                s);
        assertTrue(
                s.contains(
                        "| EP training step | tiny model, global batch 16 x 64 tokens, W=2 |"
                                + "  | 6000 tok/s | 21.5% of step in EP |"),
                s);
        assertTrue(
                s.contains(
                        "| MoE layer fwd+bwd (EP, loopback) | T=4096 H=1024 E=64 K=6 I=512 | 1713.0"
                                + " ms | 2392 tok/s, 135.0 GFLOP/s experts | 0.69 of dense matMul"),
                s);
        assertTrue(s.contains("EP layer 14.4x faster"), s);
        assertEquals(0, new BenchTable().addEpReport("something else entirely\n"));
    }
}
