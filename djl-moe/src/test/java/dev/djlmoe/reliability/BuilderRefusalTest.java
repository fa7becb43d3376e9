/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.reliability;

import dev.djlmoe.ep.EpContext;
import dev.djlmoe.ep.WireFormat;
import dev.djlmoe.nn.ExpertPrecision;
import dev.djlmoe.nn.MoeLayer;
import dev.djlmoe.nn.MoeRouter;
import dev.djlmoe.nn.RoutedExperts;
import dev.djlmoe.nn.ScoreFunction;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.DynamicNode;
import org.junit.jupiter.api.TestFactory;

/**
 * Hostile configuration of the blocks: the builders of {@link MoeRouter} (top-K, experts, groups,
 * scaling factor, correction bias) and its static helpers, {@link MoeLayer} (sizes, router, shared
 * experts, sequence aux alpha, experts against the EP world), {@link RoutedExperts}, {@link
 * EpContext} and {@link WireFormat#fromName}. Each case names the setting, the offending value and
 * the range it must lie in.
 */
class BuilderRefusalTest extends BadInputFixture {

    @TestFactory
    Stream<DynamicNode> buildersRefuseBadConfigurationByNameValueAndLimit() {
        return catalogue(refusals(), Map.of());
    }

    private static MoeRouter.Builder router() {
        return MoeRouter.builder().setNumExperts(E).setTopK(2);
    }

    /** The refusal cases: each call must throw with the argument, value and limit. */
    private static List<Refusal> refusals() {
        List<Refusal> t = new ArrayList<>();
        String b = "builders";
        t.add(
                iae(
                        b,
                        "router topK 0",
                        () -> router().setTopK(0).build(),
                        "topK",
                        "[1, numExperts=8]",
                        "got 0"));
        t.add(
                iae(
                        b,
                        "router topK > E",
                        () -> router().setTopK(9).build(),
                        "topK",
                        "[1, numExperts=8]",
                        "got 9"));
        t.add(
                iae(
                        b,
                        "router E 0",
                        () -> router().setNumExperts(0).build(),
                        "numExperts",
                        ">= 1",
                        "got 0"));
        t.add(
                iae(
                        b,
                        "router groups not dividing E",
                        () -> router().optNumGroups(3).build(),
                        "numGroups",
                        "numExperts=8",
                        "numGroups=3"));
        t.add(
                iae(
                        b,
                        "router topkGroup > groups",
                        () -> router().optNumGroups(4).optTopkGroup(5).build(),
                        "topkGroup",
                        "[1, numGroups=4]",
                        "got 5"));
        t.add(
                iae(
                        b,
                        "router topK beyond kept groups",
                        () -> router().setTopK(5).optNumGroups(4).optTopkGroup(2).build(),
                        "topK",
                        "= 4",
                        "got topK=5"));
        t.add(
                iae(
                        b,
                        "router scaling NaN",
                        () -> router().optRoutedScalingFactor(Float.NaN).build(),
                        "routedScalingFactor",
                        "NaN",
                        "finite"));
        t.add(
                iae(
                        b,
                        "router scaling Inf",
                        () -> router().optRoutedScalingFactor(Float.POSITIVE_INFINITY).build(),
                        "routedScalingFactor",
                        "Infinity",
                        "finite"));
        t.add(
                iae(
                        b,
                        "router scaling 0",
                        () -> router().optRoutedScalingFactor(0f).build(),
                        "routedScalingFactor",
                        "got 0.0",
                        "> 0"));
        t.add(
                iae(
                        b,
                        "router bias with softmax",
                        () ->
                                router().optScoreFunction(ScoreFunction.SOFTMAX)
                                        .optCorrectionBias(true)
                                        .build(),
                        "correctionBias",
                        "SIGMOID",
                        "SOFTMAX"));
        t.add(
                iae(
                        b,
                        "bias update gamma NaN",
                        () -> MoeRouter.correctionBiasDelta(new long[E], E, Float.NaN),
                        "gamma",
                        "finite",
                        "NaN"));
        t.add(
                iae(
                        b,
                        "bias update wrong length",
                        () -> MoeRouter.correctionBiasDelta(new long[7], E, 0.1f),
                        "length 8",
                        "got 7"));
        t.add(
                iae(
                        b,
                        "count tokens id out of range",
                        () -> MoeRouter.countTokensPerExpert(idx(0, 1, 2, 9), E),
                        "[-1, 8)",
                        "got 9"));
        t.add(
                iae(
                        b,
                        "moe layer hidden 0",
                        () ->
                                MoeLayer.builder()
                                        .setHiddenSize(0)
                                        .setExpertIntermediateSize(4)
                                        .setRouter(router())
                                        .build(),
                        "hidden size 0",
                        "positive"));
        t.add(
                iae(
                        b,
                        "moe layer intermediate -1",
                        () ->
                                MoeLayer.builder()
                                        .setHiddenSize(8)
                                        .setExpertIntermediateSize(-1)
                                        .setRouter(router())
                                        .build(),
                        "intermediate size -1",
                        "positive"));
        t.add(
                iae(
                        b,
                        "moe layer without router",
                        () ->
                                MoeLayer.builder()
                                        .setHiddenSize(8)
                                        .setExpertIntermediateSize(4)
                                        .build(),
                        "setRouter",
                        "required"));
        t.add(
                iae(
                        b,
                        "moe layer shared experts -1",
                        () ->
                                MoeLayer.builder()
                                        .setHiddenSize(8)
                                        .setExpertIntermediateSize(4)
                                        .setRouter(router())
                                        .optNumSharedExperts(-1)
                                        .build(),
                        "shared experts -1",
                        ">= 0"));
        t.add(
                iae(
                        b,
                        "moe layer seq aux NaN",
                        () ->
                                MoeLayer.builder()
                                        .setHiddenSize(8)
                                        .setExpertIntermediateSize(4)
                                        .setRouter(router())
                                        .optSeqAuxAlpha(Float.NaN)
                                        .build(),
                        "seq aux alpha NaN",
                        "finite"));
        t.add(
                iae(
                        b,
                        "moe layer E not divisible by EP world",
                        () -> {
                            try (ThreeRanks g3 = new ThreeRanks();
                                    EpContext ctx =
                                            EpContext.builder().setProcessGroup(g3).build()) {
                                MoeLayer.builder()
                                        .setHiddenSize(8)
                                        .setExpertIntermediateSize(4)
                                        .setRouter(router())
                                        .optContext(ctx)
                                        .build();
                            }
                        },
                        "num experts 8",
                        "EP world size 3"));
        t.add(
                iae(
                        b,
                        "routed experts E 0",
                        () ->
                                RoutedExperts.builder()
                                        .setNumExperts(0)
                                        .setHiddenSize(8)
                                        .setIntermediateSize(4)
                                        .build(),
                        "numExperts",
                        ">= 1",
                        "got 0"));
        t.add(
                iae(
                        b,
                        "routed experts hidden 0",
                        () ->
                                RoutedExperts.builder()
                                        .setNumExperts(2)
                                        .setHiddenSize(0)
                                        .setIntermediateSize(4)
                                        .build(),
                        "hiddenSize",
                        ">= 1",
                        "got 0"));
        t.add(
                iae(
                        b,
                        "routed experts intermediate 0",
                        () ->
                                RoutedExperts.builder()
                                        .setNumExperts(2)
                                        .setHiddenSize(8)
                                        .setIntermediateSize(0)
                                        .build(),
                        "intermediateSize",
                        ">= 1",
                        "got 0"));
        t.add(
                iae(
                        b,
                        "routed experts precision null",
                        () -> RoutedExperts.builder().optPrecision((ExpertPrecision) null),
                        "precision",
                        "null"));
        t.add(
                iae(
                        b,
                        "context alignment 0",
                        () ->
                                EpContext.builder()
                                        .setProcessGroup(group)
                                        .optExpertAlignment(0)
                                        .build(),
                        "alignment 0",
                        ">= 1"));
        t.add(
                iae(
                        b,
                        "context without group",
                        () -> EpContext.builder().build(),
                        "setProcessGroup",
                        "required"));
        t.add(
                iae(
                        b,
                        "context wire null",
                        () ->
                                EpContext.builder()
                                        .setProcessGroup(group)
                                        .optDispatchWire(null)
                                        .build(),
                        "wire",
                        "null"));
        t.add(
                iae(
                        b,
                        "wire format name",
                        () -> WireFormat.fromName("fp4"),
                        "'fp4'",
                        "fp32, bf16, fp8, mxfp8"));
        return t;
    }
}
