/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.reliability;

import dev.djlmoe.dist.RankEnvironment;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.TestFactory;

/**
 * Hostile torchrun environment given to {@link RankEnvironment}: {@code WORLD_SIZE}, {@code RANK},
 * {@code MASTER_PORT} and {@code LOCAL_WORLD_SIZE} missing, not a number or out of range. Each case
 * names the variable, the offending value and the range it must lie in.
 */
class RankEnvironmentRefusalTest extends BadInputFixture {

    @TestFactory
    Stream<DynamicNode> rankEnvironmentRefusesBadVariablesByNameValueAndLimit() {
        return catalogue(refusals(), Map.of());
    }

    /** The refusal cases: each call must throw with the argument, value and limit. */
    private static List<Refusal> refusals() {
        List<Refusal> t = new ArrayList<>();
        String env = "environment";
        t.add(
                iae(
                        env,
                        "WORLD_SIZE 0",
                        () -> RankEnvironment.from(Map.of("WORLD_SIZE", "0")),
                        "WORLD_SIZE = 0",
                        "[1, "));
        t.add(
                iae(
                        env,
                        "WORLD_SIZE not a number",
                        () -> RankEnvironment.from(Map.of("WORLD_SIZE", "four")),
                        "WORLD_SIZE",
                        "'four'",
                        "not an integer"));
        t.add(
                iae(
                        env,
                        "RANK >= WORLD_SIZE",
                        () ->
                                RankEnvironment.from(
                                        Map.of(
                                                "WORLD_SIZE",
                                                "4",
                                                "RANK",
                                                "4",
                                                "MASTER_PORT",
                                                "29500")),
                        "RANK = 4",
                        "[0, 3]"));
        t.add(
                iae(
                        env,
                        "RANK missing",
                        () ->
                                RankEnvironment.from(
                                        Map.of("WORLD_SIZE", "4", "MASTER_PORT", "29500")),
                        "RANK",
                        "not set"));
        t.add(
                iae(
                        env,
                        "MASTER_PORT 70000",
                        () ->
                                RankEnvironment.from(
                                        Map.of(
                                                "WORLD_SIZE",
                                                "2",
                                                "RANK",
                                                "0",
                                                "MASTER_PORT",
                                                "70000")),
                        "MASTER_PORT = 70000",
                        "[1, 65535]"));
        t.add(
                iae(
                        env,
                        "LOCAL_WORLD_SIZE > WORLD_SIZE",
                        () ->
                                RankEnvironment.from(
                                        Map.of(
                                                "WORLD_SIZE",
                                                "2",
                                                "RANK",
                                                "0",
                                                "MASTER_PORT",
                                                "29500",
                                                "LOCAL_WORLD_SIZE",
                                                "3")),
                        "LOCAL_WORLD_SIZE = 3",
                        "[1, 2]"));
        return t;
    }
}
