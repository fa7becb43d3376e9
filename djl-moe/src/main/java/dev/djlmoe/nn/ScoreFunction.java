package dev.djlmoe.nn;

import ai.djl.ndarray.NDArray;
import java.util.Locale;

/**
 * The function that turns router logits {@code [T, E]} into per-expert affinity scores {@code [T,
 * E]}.
 *
 * <p>Both are computed in float32. {@link #SIGMOID} is DeepSeek-V3's scoring function (Hugging Face
 * {@code scoring_func="sigmoid"}); {@link #SOFTMAX} is the classic top-k gate of
 * DeepSeek-V2(-Lite), Qwen-MoE and Mixtral ({@code scoring_func="softmax"}).
 */
public enum ScoreFunction {

    /** {@code s = sigmoid(logits)}, element-wise; scores of different experts are independent. */
    SIGMOID,

    /** {@code s = softmax(logits)} over the expert axis; the scores of a token sum to one. */
    SOFTMAX;

    /**
     * Applies this score function.
     *
     * @param logits router logits: [T, E]
     * @return scores: [T, E]
     */
    public NDArray apply(NDArray logits) {
        if (this == SIGMOID) {
            return logits.getNDArrayInternal().sigmoid();
        }
        return logits.softmax(-1);
    }

    /**
     * Parses the Hugging Face {@code scoring_func} spelling ({@code "sigmoid"} or {@code
     * "softmax"}, case-insensitive).
     *
     * @param name the name to parse
     * @return the score function
     * @throws IllegalArgumentException if the name is neither
     */
    public static ScoreFunction fromString(String name) {
        if (name != null) {
            switch (name.trim().toLowerCase(Locale.ROOT)) {
                case "sigmoid":
                    return SIGMOID;
                case "softmax":
                    return SOFTMAX;
                default:
                    break;
            }
        }
        throw new IllegalArgumentException(
                "scoreFunction must be \"sigmoid\" or \"softmax\", got \"" + name + "\"");
    }
}
