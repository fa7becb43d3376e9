/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.autograd;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.pytorch.engine.PtNDArray;
import ai.djl.pytorch.jni.JniUtils;
import dev.djlmoe.profile.StepPhases;
import java.util.ArrayList;
import java.util.List;

/**
 * The staged backward: DJL has no custom autograd functions, so an operation that runs in native
 * code (dispatch, combine) cuts the autograd graph, and this tape stitches the pieces together.
 *
 * <p>Forward: {@link #record} takes an operation's inputs (still in the graph) and outputs, and
 * returns the outputs as fresh leaves with gradients attached; downstream work uses the leaves.
 * {@link #cut} records an identity, which bounds how far one backward walk reaches (place cuts at
 * block inputs so no part of the graph is walked twice).
 *
 * <p>Backward: {@link #backward(NDArray)} runs autograd from the loss, then for each entry in
 * reverse order reads the leaves' gradients, applies the entry's {@link Vjp} (for EP operations,
 * the dual communication op) and pushes the result into the graph of the inputs with {@code
 * JniUtils.backward}. Entries are processed after every entry recorded later, so a leaf's gradient
 * is complete when it is read. Graphs are kept ({@code keepGraph}) so that a segment reachable from
 * two entries stays correct; they are freed with the step's arrays.
 *
 * <p>While {@link StepPhases} records the step, each entry remembers the forward region its
 * backward walk covers ({@link StepPhases#region}) and the phase it was recorded in, and the
 * backward times the walk from the loss, each entry's walk and each non-identity VJP under those
 * names.
 *
 * <p>Not thread-safe: one tape per training step and thread.
 */
public final class Tape implements AutoCloseable {

    private final List<Entry> entries = new ArrayList<>();
    private final List<AutoCloseable> resources = new ArrayList<>();
    private boolean closed;
    private boolean backwardRun;

    /**
     * Records an operation and returns its differentiable outputs as leaves.
     *
     * @param inputs the operation's differentiable inputs (arrays in the autograd graph)
     * @param outputs the operation's outputs computed outside autograd (float arrays)
     * @param vjp maps the outputs' gradients to the inputs' gradients
     * @return the outputs as new leaves that share storage with {@code outputs} and require
     *     gradients, in the same order
     */
    public NDList record(NDList inputs, NDList outputs, Vjp vjp) {
        return record(inputs, outputs, vjp, false);
    }

    private NDList record(NDList inputs, NDList outputs, Vjp vjp, boolean identity) {
        checkOpen();
        if (backwardRun) {
            throw new IllegalStateException("record: backward already ran on this tape");
        }
        NDList leaves = new NDList(outputs.size());
        for (NDArray out : outputs) {
            NDArray leaf = out.stopGradient();
            leaf.setRequiresGradient(true);
            leaves.add(leaf);
        }
        String region = StepPhases.region();
        String at = identity ? null : StepPhases.currentPath();
        entries.add(new Entry(inputs, leaves, vjp, region, at));
        return leaves;
    }

    /**
     * Cuts the graph at {@code x}: returns a leaf that shares its storage; in backward the leaf's
     * gradient is pushed into {@code x} unchanged.
     *
     * @param x an array in the autograd graph
     * @return the leaf to use downstream
     */
    public NDArray cut(NDArray x) {
        if (!Autograd.isRecording()) {
            return x;
        }
        return record(new NDList(x), new NDList(x), grads -> grads, true).singletonOrThrow();
    }

    /**
     * Keeps a resource (such as an EP handle that a recorded backward needs) alive until the tape
     * is closed, then closes it.
     *
     * @param resource the resource
     */
    public void keepUntilClose(AutoCloseable resource) {
        checkOpen();
        resources.add(resource);
    }

    /**
     * Returns the number of recorded entries.
     *
     * @return the entry count
     */
    public int size() {
        return entries.size();
    }

    /**
     * Runs the staged backward from a scalar loss (the gradient of the loss is one).
     *
     * @param loss a scalar in the autograd graph
     */
    public void backward(NDArray loss) {
        checkOpen();
        if (backwardRun) {
            throw new IllegalStateException("backward: this tape already ran its backward");
        }
        if (loss.getShape().size() != 1) {
            throw new IllegalArgumentException(
                    "backward: loss must be a scalar, got shape " + loss.getShape());
        }
        backwardRun = true;
        String lossRegion = StepPhases.region();
        try (NDArray one = loss.onesLike();
                StepPhases.Scope walk = phase(lossRegion)) {
            if (!Autograd.backward(loss, one)) {
                throw new IllegalStateException(
                        "backward: the loss is not in the autograd graph (open a gradient"
                                + " collector before the forward pass)");
            }
        }
        for (int i = entries.size() - 1; i >= 0; i--) {
            Entry e = entries.get(i);
            StepPhases.Scope vjpPhase = phase(e.at);
            NDList grads = new NDList(e.leaves.size());
            boolean any = false;
            for (NDArray leaf : e.leaves) {
                NDArray g = JniUtils.getGradient((PtNDArray) leaf);
                if (g == null) {
                    g = leaf.zerosLike();
                } else {
                    any = true;
                }
                grads.add(g);
            }
            if (!any) {
                vjpPhase.close();
                continue; // nothing downstream used these outputs
            }
            NDList inputGrads;
            try (vjpPhase) {
                inputGrads = e.vjp.apply(grads);
            }
            if (inputGrads.size() != e.inputs.size()) {
                throw new IllegalStateException(
                        "tape entry "
                                + i
                                + ": vjp returned "
                                + inputGrads.size()
                                + " gradients for "
                                + e.inputs.size()
                                + " inputs");
            }
            try (StepPhases.Scope walk = phase(e.region)) {
                push(e.inputs, inputGrads);
            }
            // Autograd has taken the gradients in (summed into .grad or the graph's buffers):
            // the handles read here and the VJP's results are dropped now, not with the step's
            // manager, so that an entry's gradients (the expert weights' are as large as the
            // weights) do not pile up over the backward.
            closeAll(inputGrads);
            closeAll(grads);
        }
    }

    private static void closeAll(NDList arrays) {
        for (NDArray a : arrays) {
            if (a != null) {
                a.close();
            }
        }
    }

    /** A phase of the profiled backward, or nothing (no name: not recording, or an identity). */
    private static StepPhases.Scope phase(String name) {
        return name == null ? () -> {} : StepPhases.enter(name);
    }

    /**
     * Pushes gradients into the graph of several arrays with one autograd walk: the walk starts at
     * the scalar {@code sum_i <x_i, g_i>}, whose gradient with respect to {@code x_i} is {@code
     * g_i}, so shared upstream segments are walked once.
     */
    private static void push(NDList targets, NDList grads) {
        List<NDArray> xs = new ArrayList<>();
        NDList gs = new NDList();
        try {
            pushDetached(targets, grads, xs, gs);
        } finally {
            closeAll(gs);
        }
    }

    /**
     * {@link #push} with {@code gs} collecting the detached gradients it makes (closed by the
     * caller). The proxy's terms are closed here: each {@code x_i * g_i} has the shape of {@code
     * x_i} and lives on {@code x_i}'s manager, which for a parameter is the model's, so left open
     * it (and the graph node holding {@code g_i}) would outlive the step.
     */
    private static void pushDetached(NDList targets, NDList grads, List<NDArray> xs, NDList gs) {
        for (int i = 0; i < targets.size(); i++) {
            NDArray x = targets.get(i);
            NDArray g = grads.get(i);
            if (g == null || x == null) {
                continue;
            }
            if (!x.getShape().equals(g.getShape())) {
                throw new IllegalStateException(
                        "gradient of shape "
                                + g.getShape()
                                + " for an array of shape "
                                + x.getShape());
            }
            xs.add(x);
            gs.add(g.stopGradient());
        }
        if (xs.isEmpty()) {
            return;
        }
        if (xs.size() == 1) {
            Autograd.backward(xs.get(0), gs.get(0));
            return;
        }
        NDList temps = new NDList();
        try {
            NDArray proxy = null;
            for (int i = 0; i < xs.size(); i++) {
                NDArray product = xs.get(i).mul(gs.get(i));
                temps.add(product);
                NDArray term = product.sum();
                temps.add(term);
                if (proxy != null) {
                    proxy = proxy.add(term);
                    temps.add(proxy);
                } else {
                    proxy = term;
                }
            }
            try (NDArray one = proxy.onesLike()) {
                // false: not one of the targets is in the graph, nothing to push.
                Autograd.backward(proxy, one);
            }
        } finally {
            closeAll(temps);
        }
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("the tape is closed");
        }
    }

    /** Drops the entries and closes the kept resources; the arrays belong to their managers. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        entries.clear();
        RuntimeException first = null;
        for (int i = resources.size() - 1; i >= 0; i--) {
            try {
                resources.get(i).close();
            } catch (Exception e) {
                if (first == null) {
                    first = new IllegalStateException("closing a tape resource failed", e);
                }
            }
        }
        resources.clear();
        if (first != null) {
            throw first;
        }
    }

    /**
     * One recorded operation; {@code region} names the forward work its backward walk covers and
     * {@code at} the phase it ran in (null when not profiling; {@code at} also null for a cut).
     */
    private record Entry(NDList inputs, NDList leaves, Vjp vjp, String region, String at) {}
}
