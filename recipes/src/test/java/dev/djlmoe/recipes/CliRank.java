/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes;

import dev.djlmoe.dist.MultiRank;
import dev.djlmoe.recipes.cli.Main;
import java.io.PrintWriter;

/**
 * One rank of a multi-process test that runs the {@code djl-moe} command line (started through
 * {@link MultiRank}); {@code @OUT} in an argument stands for the run's shared output directory.
 */
public final class CliRank {

    private CliRank() {}

    /**
     * Entry point of a rank.
     *
     * @param args the command line, {@code @OUT} replaced by {@link MultiRank#outDir()}
     */
    public static void main(String[] args) {
        MultiRank.watchParent();
        String out = MultiRank.outDir().toString();
        String[] a = new String[args.length];
        for (int i = 0; i < args.length; i++) {
            a[i] = args[i].replace("@OUT", out);
        }
        int code;
        try {
            code =
                    Main.execute(
                            new PrintWriter(System.out, true),
                            new PrintWriter(System.out, true),
                            a);
        } catch (Throwable e) {
            e.printStackTrace(System.out);
            code = 2;
        }
        System.out.flush();
        System.exit(code);
    }
}
