/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import ai.djl.ndarray.NDArray;
import ai.djl.ndarray.NDList;

/**
 * Where the tokens of one rank go: the result of {@link EpBuffer#layout}.
 *
 * @param tokensPerRank {@code [W]} int32: tokens sent to each rank, a token counted once per rank
 *     however many of its experts live there
 * @param tokensPerExpert {@code [E]} int32: selections of each expert
 * @param isTokenInRank {@code [T, W]} boolean: whether token t goes to rank r
 */
public record EpLayout(NDArray tokensPerRank, NDArray tokensPerExpert, NDArray isTokenInRank) {

    /**
     * Returns the three arrays as a list.
     *
     * @return {@code [tokensPerRank, tokensPerExpert, isTokenInRank]}
     */
    public NDList toList() {
        return new NDList(tokensPerRank, tokensPerExpert, isTokenInRank);
    }
}
