/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import java.io.IOException;

/**
 * A command that can tell, before any rank starts, whether it can run on a number of ranks (for
 * example whether the model's routed experts divide over them). {@code launch} and {@code --ep N}
 * call it once in the launcher, so a bad EP size is refused in one message instead of once per rank
 * after every rank has started.
 */
public interface RankCountCheck {

    /**
     * Checks that the command, with the options it was given, can run on {@code worldSize} ranks.
     *
     * @param worldSize the number of ranks of the job
     * @throws IllegalArgumentException naming the setting, its value and the limit
     * @throws IOException when a file the check needs cannot be read
     */
    void checkRanks(int worldSize) throws IOException;
}
