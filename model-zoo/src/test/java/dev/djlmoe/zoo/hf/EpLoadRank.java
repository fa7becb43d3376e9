/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.zoo.hf;

import ai.djl.ndarray.NDManager;
import dev.djlmoe.dist.ProcessGroup;
import dev.djlmoe.dist.ProcessGroups;
import dev.djlmoe.dist.RankEnvironment;
import dev.djlmoe.ep.EpContext;
import dev.djlmoe.nn.MoeLayer;
import dev.djlmoe.zoo.io.DType;
import dev.djlmoe.zoo.io.SafetensorsWriter;
import java.nio.file.Path;
import java.nio.file.Paths;

/**
 * One rank of {@link ExpertParallelLoadTest}: loads a checkpoint with expert parallelism (this
 * rank's experts only), runs the fixture's ids, writes {@code rank-R.safetensors} with the logits
 * and the number of local experts, then saves the model sharded into {@code OUT/saved}.
 *
 * <p>Arguments: checkpoint directory, output directory.
 */
public final class EpLoadRank {

    private EpLoadRank() {}

    /**
     * Runs the rank.
     *
     * @param args checkpoint directory, output directory
     * @throws Exception on any failure (the exit code tells the test)
     */
    public static void main(String[] args) throws Exception {
        Path ckpt = Paths.get(args[0]);
        Path out = Paths.get(args[1]);
        RankEnvironment env = RankEnvironment.fromSystem();
        try (ProcessGroup group = ProcessGroups.create(env);
                EpContext ctx = EpContext.builder().setProcessGroup(group).build();
                NDManager m = NDManager.newBaseManager()) {
            HfMoeForCausalLm model = HfCheckpoints.load(ckpt, m, ctx);
            MoeLayer first = model.getMoeLayers().get(0);
            Fixtures.Expected exp = Fixtures.expectedAt(ckpt);
            float[] logits = HfCheckpointsTest.logits(model, m, exp.ids(), exp.idsShape());
            new SafetensorsWriter()
                    .add("logits", DType.F32, exp.logitsShape(), logits)
                    .add(
                            "local_experts",
                            DType.F32,
                            new long[] {2},
                            new float[] {
                                first.getExperts().getNumExperts(), first.firstLocalExpert()
                            })
                    .write(out.resolve("rank-" + env.rank() + ".safetensors"));
            HfCheckpoints.save(model, out.resolve("saved"));
        }
        System.exit(0);
    }
}
