/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import ai.djl.engine.Engine;
import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.NDManager;
import ai.djl.ndarray.index.NDIndex;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.nn.Activation;
import ai.djl.nn.Parameter;
import ai.djl.training.GradientCollector;
import ai.djl.training.ParameterStore;
import ai.djl.util.Pair;
import dev.djlmoe.autograd.Tape;
import dev.djlmoe.dist.LocalProcessGroup;
import dev.djlmoe.nn.MoeLayer;
import dev.djlmoe.nn.MoeRouter;
import dev.djlmoe.nn.RoutedExperts;
import dev.djlmoe.nn.SwiGluMlp;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The MoE layer with expert parallelism (one rank, native dispatch/combine, staged backward)
 * against an independent dense reference in plain DJL ops: every expert on every token, outputs
 * masked by the routing weights. Forward outputs and the gradients of every parameter and of the
 * input must agree.
 */
class MoeLayerEpTest {

    private static final int H = 32;
    private static final int E = 8;
    private static final int K = 3;
    private static final int I = 24;
    private static final float FWD_TOL = 2e-5f;
    private static final float GRAD_TOL = 2e-4f;

    private static NDManager manager;
    private static LocalProcessGroup group;
    private static EpContext context;

    @BeforeAll
    static void setUp() {
        manager = NDManager.newBaseManager();
        group = new LocalProcessGroup();
        context = EpContext.builder().setProcessGroup(group).build();
    }

    @AfterAll
    static void tearDown() {
        context.close();
        group.close();
        manager.close();
    }

    private static MoeRouter.Builder router() {
        return MoeRouter.builder()
                .setNumExperts(E)
                .setTopK(K)
                .optNumGroups(4)
                .optTopkGroup(3)
                .optRoutedScalingFactor(1.5f)
                .optCorrectionBias(true);
    }

    private static MoeLayer layer(EpContext ctx, NDManager m) {
        MoeLayer l =
                MoeLayer.builder()
                        .setHiddenSize(H)
                        .setExpertIntermediateSize(I)
                        .setRouter(router())
                        .optNumSharedExperts(1)
                        .optSeqAuxAlpha(0.01f)
                        .optContext(ctx)
                        .build();
        Engine.getInstance().setRandomSeed(42);
        l.initialize(m, DataType.FLOAT32, new Shape(2, 16, H));
        // A hot expert: the correction bias (selection only) pulls expert 5 into every token.
        NDArray bias = l.getGate().getCorrectionBias().getArray();
        bias.set(new NDIndex(5), 1.0f);
        return l;
    }

    /** Dense reference: y = sum_e coef[t, e] * Expert_e(u) + Shared(u), coef from the router. */
    private static NDArray denseReference(MoeLayer l, NDArray u2d) {
        NDArray gw = l.getGate().getWeight().getArray();
        NDArray gb = l.getGate().getCorrectionBias().getArray();
        NDList r = MoeRouter.route(u2d, gw, gb, l.getRouterConfig());
        NDArray idx = r.get(0);
        NDArray w = r.get(1);
        NDArray coef =
                idx.oneHot(E)
                        .toType(DataType.FLOAT32, false)
                        .mul(w.expandDims(2))
                        .sum(new int[] {1}); // [T, E]
        RoutedExperts ex = l.getExperts();
        NDArray g = ex.getParameters().get(RoutedExperts.GATE_PROJ).getArray();
        NDArray up = ex.getParameters().get(RoutedExperts.UP_PROJ).getArray();
        NDArray down = ex.getParameters().get(RoutedExperts.DOWN_PROJ).getArray();
        NDArray out = null;
        for (int e = 0; e < E; e++) {
            NDArray a = u2d.matMul(g.get(e).transpose());
            NDArray b = u2d.matMul(up.get(e).transpose());
            NDArray y =
                    a.mul(Activation.sigmoid(a)).mul(b).matMul(down.get(e).transpose()); // [T, H]
            NDArray term = y.mul(coef.get(new NDIndex(":, {}:{}", e, e + 1)));
            out = out == null ? term : out.add(term);
        }
        SwiGluMlp sh = l.getSharedExperts();
        NDArray shared =
                SwiGluMlp.swiGlu(
                                u2d,
                                sh.getParameters().get(SwiGluMlp.GATE_PROJ).getArray(),
                                sh.getParameters().get(SwiGluMlp.UP_PROJ).getArray(),
                                sh.getParameters().get(SwiGluMlp.DOWN_PROJ).getArray())
                        .head();
        return out.add(shared);
    }

    private static Map<String, float[]> gradients(MoeLayer l) {
        Map<String, float[]> out = new LinkedHashMap<>();
        for (Pair<String, Parameter> p : l.getParameters()) {
            if (p.getValue().requiresGradient()) {
                out.put(p.getKey(), p.getValue().getArray().getGradient().toFloatArray());
            }
        }
        return out;
    }

    private static void zeroGradients(MoeLayer l) {
        for (Pair<String, Parameter> p : l.getParameters()) {
            if (p.getValue().requiresGradient()) {
                NDArray g = p.getValue().getArray().getGradient();
                g.subi(g);
            }
        }
    }

    @Test
    void epForwardAndGradientsEqualTheDenseReference() {
        try (NDManager m = manager.newSubManager()) {
            MoeLayer l = layer(context, m);
            float[] data = RoutingData.randomRows(77, 2 * 16, H, 1f);
            float[] probe = RoutingData.randomRows(78, 2 * 16, H, 1f);
            NDArray ref;
            float[] refInputGrad;
            Map<String, float[]> refGrads;
            ParameterStore ps = new ParameterStore(m, false);
            // Reference: plain autograd through the dense formulation.
            try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
                NDArray u = m.create(data, new Shape(32, H));
                u.setRequiresGradient(true);
                ref = denseReference(l, u);
                NDArray loss = ref.mul(m.create(probe, new Shape(32, H))).sum();
                gc.backward(loss);
                refInputGrad = u.getGradient().toFloatArray();
                refGrads = gradients(l);
            }
            zeroGradients(l);
            // EP path: native dispatch/combine, staged backward through the tape.
            float[] epOut;
            float[] epInputGrad;
            Map<String, float[]> epGrads;
            try (GradientCollector gc = Engine.getInstance().newGradientCollector();
                    Tape tape = context.beginTape()) {
                NDArray u = m.create(data, new Shape(32, H));
                u.setRequiresGradient(true);
                NDArray out = l.forward(ps, new NDList(u), true).head();
                assertTrue(tape.size() >= 3, "cut, dispatch and combine are recorded");
                NDArray loss = out.mul(m.create(probe, new Shape(32, H))).sum();
                tape.backward(loss);
                epOut = out.toFloatArray();
                epInputGrad = u.getGradient().toFloatArray();
                epGrads = gradients(l);
            }
            zeroGradients(l);
            assertClose(ref.toFloatArray(), epOut, FWD_TOL, "forward");
            assertClose(refInputGrad, epInputGrad, GRAD_TOL, "input gradient");
            assertEquals(refGrads.keySet(), epGrads.keySet());
            for (String name : refGrads.keySet()) {
                assertClose(refGrads.get(name), epGrads.get(name), GRAD_TOL, name);
            }
            // Every parameter that can learn got a gradient (the router's through the weights).
            for (Map.Entry<String, float[]> e : epGrads.entrySet()) {
                assertTrue(maxAbs(e.getValue()) > 0, e.getKey() + " has a zero gradient");
            }
        }
    }

    @Test
    void epPathEqualsLocalPathIncludingBalanceLoss() {
        try (NDManager m = manager.newSubManager()) {
            MoeLayer ep = layer(context, m);
            MoeLayer local = layer(null, m);
            copyParameters(ep, local);
            ParameterStore ps = new ParameterStore(m, false);
            float[] data = RoutingData.randomRows(80, 2 * 16, H, 1f);
            float[][] outs = new float[2][];
            float[][] inGrads = new float[2][];
            Map<String, float[]>[] grads = new Map[2];
            MoeLayer[] layers = {local, ep};
            for (int i = 0; i < 2; i++) {
                try (GradientCollector gc = Engine.getInstance().newGradientCollector();
                        Tape tape = context.beginTape()) {
                    NDArray u = m.create(data, new Shape(2, 16, H));
                    u.setRequiresGradient(true);
                    NDArray out = layers[i].forward(ps, new NDList(u), true).head();
                    NDArray aux = layers[i].takeAuxLoss();
                    assertNotNull(aux, "balance loss computed for [B, S, H] input");
                    NDArray loss = out.square().mean().add(aux);
                    tape.backward(loss);
                    outs[i] = out.toFloatArray();
                    inGrads[i] = u.getGradient().toFloatArray();
                    grads[i] = gradients(layers[i]);
                }
                zeroGradients(layers[i]);
            }
            assertClose(outs[0], outs[1], FWD_TOL, "forward");
            assertClose(inGrads[0], inGrads[1], GRAD_TOL, "input gradient");
            for (String name : grads[0].keySet()) {
                assertClose(grads[0].get(name), grads[1].get(name), GRAD_TOL, name);
            }
            long[] load = ep.takeLoad();
            long total = 0;
            for (long c : load) {
                total += c;
            }
            assertEquals(2L * 16 * K, total, "every selection counted once");
            assertEquals(32L, load[5], "the biased expert is picked by every token");
        }
    }

    @Test
    void trainingWithoutATapeIsRefused() {
        try (NDManager m = manager.newSubManager()) {
            MoeLayer l = layer(context, m);
            ParameterStore ps = new ParameterStore(m, false);
            try (GradientCollector gc = Engine.getInstance().newGradientCollector()) {
                NDArray u = m.ones(new Shape(4, H));
                u.setRequiresGradient(true);
                IllegalStateException e =
                        assertThrows(
                                IllegalStateException.class,
                                () -> l.forward(ps, new NDList(u), true));
                assertTrue(e.getMessage().contains("no tape is active"), e.getMessage());
            }
            // Inference needs no tape and closes its handles itself.
            NDArray out = l.forward(ps, new NDList(m.ones(new Shape(4, H))), false).head();
            assertEquals(new Shape(4, H), out.getShape());
            assertEquals(Device.cpu(), out.getDevice());
        }
    }

    static void copyParameters(MoeLayer from, MoeLayer to) {
        var src = from.getParameters();
        var dst = to.getParameters();
        assertEquals(src.size(), dst.size());
        for (int i = 0; i < src.size(); i++) {
            assertEquals(src.get(i).getKey(), dst.get(i).getKey());
            NDArray a = src.get(i).getValue().getArray();
            dst.get(i).getValue().getArray().set(a.toFloatArray());
        }
    }

    static float maxAbs(float[] a) {
        float m = 0;
        for (float v : a) {
            m = Math.max(m, Math.abs(v));
        }
        return m;
    }

    static void assertClose(float[] expected, float[] actual, float tol, String what) {
        assertEquals(expected.length, actual.length, what + ": length");
        float scale = Math.max(1f, maxAbs(expected));
        for (int i = 0; i < expected.length; i++) {
            float d = Math.abs(expected[i] - actual[i]);
            if (!(d <= tol * scale)) {
                throw new AssertionError(
                        what
                                + "["
                                + i
                                + "]: expected "
                                + expected[i]
                                + " but was "
                                + actual[i]
                                + " (tolerance "
                                + tol
                                + " x "
                                + scale
                                + ")");
            }
        }
    }
}
