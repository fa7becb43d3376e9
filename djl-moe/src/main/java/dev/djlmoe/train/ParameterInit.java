/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.train;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Block;
import ai.djl.nn.Parameter;
import ai.djl.util.Pair;
import dev.djlmoe.autograd.Autograd;
import dev.djlmoe.nn.MoeLayer;
import java.nio.charset.StandardCharsets;
import java.util.IdentityHashMap;
import java.util.Map;

/**
 * Initialises a model's matrices so that the values do not depend on the EP world size: every
 * matrix is drawn from {@code N(0, 1/fan_in)} with a seed derived from the run seed and the
 * parameter's name, and each routed expert's slice from a seed that also names its global expert
 * index. So rank r with experts {@code [r E/W, (r+1) E/W)} holds exactly the values a one-rank run
 * has for those experts, and dense parameters agree on every rank. Vectors (norm weights, biases)
 * keep their initialiser's constants.
 */
public final class ParameterInit {

    private ParameterInit() {}

    /**
     * Re-initialises every matrix of an initialised block tree.
     *
     * @param root the model
     * @param seed the run seed
     */
    public static void reinitialize(Block root, long seed) {
        Autograd.withoutRecording(() -> reinitializeInPlace(root, seed));
    }

    private static void reinitializeInPlace(Block root, long seed) {
        Map<Parameter, Integer> expertOffset = new IdentityHashMap<>();
        collectExperts(root, expertOffset);
        for (Pair<String, Parameter> p : root.getParameters()) {
            Parameter param = p.getValue();
            if (!param.isInitialized()) {
                continue;
            }
            NDArray a = param.getArray();
            Shape s = a.getShape();
            if (s.dimension() < 2) {
                continue;
            }
            double std = 1.0 / Math.sqrt(s.get(s.dimension() - 1));
            Integer first = expertOffset.get(param);
            // Drawn on the CPU whatever the device: the same seed gives the same model on a GPU
            // (whose generator draws other numbers) as on the CPU.
            try (NDManager m = NDManager.newBaseManager(Device.cpu())) {
                if (first == null) {
                    Engine.getInstance().setRandomSeed(seedOf(seed, p.getKey(), -1));
                    try (NDArray v = m.randomNormal(0f, (float) std, s, a.getDataType())) {
                        a.set(v.toByteBuffer());
                    }
                } else {
                    Shape slice = s.slice(1);
                    for (int j = 0; j < s.get(0); j++) {
                        Engine.getInstance().setRandomSeed(seedOf(seed, p.getKey(), first + j));
                        try (NDArray v = m.randomNormal(0f, (float) std, slice, a.getDataType());
                                NDArray d = v.toDevice(a.getDevice(), true)) {
                            a.set(new NDIndex(j), d);
                        }
                    }
                }
            }
        }
        Engine.getInstance().setRandomSeed(seedOf(seed, "after-init", -1));
    }

    private static void collectExperts(Block block, Map<Parameter, Integer> out) {
        if (block instanceof MoeLayer) {
            MoeLayer l = (MoeLayer) block;
            for (Pair<String, Parameter> p : l.getExperts().getParameters()) {
                out.put(p.getValue(), l.firstLocalExpert());
            }
        }
        for (Pair<String, Block> c : block.getChildren()) {
            collectExperts(c.getValue(), out);
        }
    }

    private static int seedOf(long seed, String name, int expert) {
        long h = seed * 0x9E3779B97F4A7C15L;
        for (byte b : name.getBytes(StandardCharsets.UTF_8)) {
            h = (h ^ b) * 0x100000001B3L;
        }
        h = (h ^ expert) * 0xBF58476D1CE4E5B9L;
        h ^= h >>> 31;
        return (int) (h & 0x7FFFFFFF);
    }
}
