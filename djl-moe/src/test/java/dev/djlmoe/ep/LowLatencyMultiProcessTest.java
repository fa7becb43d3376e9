/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The low-latency buffer between W spawned JVMs over the cpu-shm transport, against the oracle each
 * rank computes with loops over all ranks' inputs ({@link LowLatencyOracleRank}): counts per local
 * expert equal the all-gathered selections, every row carries its source rank, token and step
 * exactly (index channel, bf16 and fp8), combine equals {@code x · Σ_k w_k (g_k + 1)} over the
 * unmasked slots in float64 (calc_diff below 1e-5 after bf16, 9e-4 after fp8), {@code -1} slots are
 * never sent, buffers are reused across ten steps without stale rows, send and receive are split by
 * other work including a normal-mode EP round on the same ranks, two results may be pending with a
 * third send refused, and a tensor larger than max_tokens_per_rank is refused by every rank with a
 * message naming it. Uneven token counts, a rank with no tokens and a hot expert in most steps. No
 * shared-memory segment may be left behind.
 *
 * <p>Already proven elsewhere and not repeated here: every other argument check and its message
 * ({@code LowLatencyBufferTest}, {@code LowLatencyRefusalTest}), fp32 and MXFP8 wires and bit-exact
 * fp32 combine ({@code LowLatencyBufferTest}), timeouts and a peer exiting ({@code
 * ll_process_test.cpp}).
 */
class LowLatencyMultiProcessTest {

    @ParameterizedTest(name = "W = {0}")
    @ValueSource(ints = {2, 4})
    void lowLatencyMatchesTheOracle(int worldSize) {
        List<String> required = new ArrayList<>(List.of("ll-oracle: OK"));
        for (LowLatencyOracleRank.Step st : LowLatencyOracleRank.steps(worldSize)) {
            required.add("ok " + st.name() + "\n");
        }
        for (String s : List.of("double-buffer", "oversize-refused", "after-refusal")) {
            required.add("ok " + s + "\n");
        }
        OracleRun.assertEveryRankPrints(LowLatencyOracleRank.class, worldSize, required);
    }
}
