/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.nn;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;
import ai.djl.ndarray.types.DataType;
import ai.djl.ndarray.types.Shape;
import ai.djl.ndarray.types.SparseFormat;
import ai.djl.nn.AbstractBlock;
import ai.djl.nn.Parameter;
import ai.djl.training.ParameterStore;
import ai.djl.training.initializer.NormalInitializer;
import ai.djl.util.PairList;

/**
 * Token embedding table: ids {@code [B, S]} int64 in {@code [0, V)} to vectors {@code [B, S, H]}.
 * Parameter {@code weight [V, H]} (Hugging Face {@code embed_tokens.weight}).
 */
public final class TokenEmbedding extends AbstractBlock {

    private static final byte VERSION = 1;

    private final long vocabSize;
    private final long hiddenSize;
    private final Parameter weight;

    /**
     * Creates an embedding table.
     *
     * @param vocabSize V
     * @param hiddenSize H
     * @param initStd standard deviation of the normal initialisation
     */
    public TokenEmbedding(long vocabSize, long hiddenSize, float initStd) {
        super(VERSION);
        if (vocabSize <= 0 || hiddenSize <= 0) {
            throw new IllegalArgumentException(
                    "TokenEmbedding: vocab size "
                            + vocabSize
                            + " and hidden size "
                            + hiddenSize
                            + " must be positive");
        }
        this.vocabSize = vocabSize;
        this.hiddenSize = hiddenSize;
        weight =
                addParameter(
                        Parameter.builder()
                                .setName("weight")
                                .setType(Parameter.Type.WEIGHT)
                                .optShape(new Shape(vocabSize, hiddenSize))
                                .optInitializer(new NormalInitializer(initStd))
                                .build());
    }

    /**
     * Returns the table parameter.
     *
     * @return {@code weight [V, H]}
     */
    public Parameter getWeight() {
        return weight;
    }

    @Override
    protected NDList forwardInternal(
            ParameterStore ps, NDList inputs, boolean training, PairList<String, Object> params) {
        NDArray ids = inputs.singletonOrThrow();
        NDArray w = ps.getValue(weight, ids.getDevice(), training);
        return new NDList(embed(ids, w));
    }

    /**
     * Looks up rows of the table.
     *
     * @param ids {@code [...]} int64 in {@code [0, V)}
     * @param weight {@code [V, H]}
     * @return {@code [..., H]}
     */
    public static NDArray embed(NDArray ids, NDArray weight) {
        if (ids.getDataType() != DataType.INT64) {
            throw new IllegalArgumentException(
                    "token ids have dtype " + ids.getDataType() + ", expected int64");
        }
        long v = weight.getShape().get(0);
        if (ids.size() > 0) {
            long min = ids.min().getLong();
            long max = ids.max().getLong();
            if (min < 0 || max >= v) {
                throw new IllegalArgumentException(
                        "token id " + (min < 0 ? min : max) + " is outside [0, " + v + ")");
            }
        }
        Shape out = ids.getShape().add(weight.getShape().get(1));
        // torch.embedding, not advanced indexing: its CPU backward accumulates each table row's
        // gradient in token order (threads split the rows), while the backward of indexing
        // (index_put_ with accumulate) adds with atomics, so its sums, and a training run, change
        // from one run to the next when libtorch uses more than one thread.
        NDArray flat = ids.flatten();
        NDArray rows =
                ids.getNDArrayInternal()
                        .embedding(flat, weight, SparseFormat.DENSE)
                        .head(); // [N, H]
        // Results of an op on the table belong to the table's (long-lived) manager: hand them to
        // the manager of the ids, which the caller closes after the step.
        rows.attach(ids.getManager());
        return rows.reshape(out);
    }

    @Override
    public Shape[] getOutputShapes(Shape[] inputShapes) {
        return new Shape[] {inputShapes[0].add(hiddenSize)};
    }

    /**
     * Returns V.
     *
     * @return the vocabulary size
     */
    public long getVocabSize() {
        return vocabSize;
    }
}
