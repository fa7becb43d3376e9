/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import java.util.ArrayList;
import java.util.List;

/**
 * A run's expert loads over time as a grid of shares: for each MoE layer, each column of steps and
 * each expert, the expert's share of the tokens the layer routed in those steps. Long runs are
 * binned into at most a given number of columns of equal width.
 *
 * @param layerNames a name per MoE layer ("layer 3", or "first MoE layer" for old metrics)
 * @param experts routed experts per layer
 * @param firstStep the first step of column 0
 * @param binSteps steps per column
 * @param share {@code share[layer][column][expert]}, NaN where a column holds no step
 * @param layout the EP layout of the last step (ranks and experts per rank), or null when the
 *     metrics did not record it
 * @param notes what the grid leaves out or assumes, for the reader of the plot
 */
record LoadGrid(
        String[] layerNames,
        int experts,
        long firstStep,
        long binSteps,
        double[][][] share,
        ExpertLoads layout,
        List<String> notes) {

    /**
     * Returns the number of step columns.
     *
     * @return columns per layer (0 without loads)
     */
    int columns() {
        return share.length == 0 ? 0 : share[0].length;
    }

    /**
     * Returns the step at the middle of a column.
     *
     * @param column the column
     * @return {@code firstStep + column * binSteps + (binSteps - 1) / 2}
     */
    double centre(int column) {
        return firstStep + column * binSteps + (binSteps - 1) / 2.0;
    }

    /**
     * Returns the largest share in the grid.
     *
     * @return the maximum over all cells (0 when there are none)
     */
    double maxShare() {
        double m = 0;
        for (double[][] layer : share) {
            for (double[] col : layer) {
                for (double v : col) {
                    if (v > m) {
                        m = v;
                    }
                }
            }
        }
        return m;
    }

    /**
     * Builds the grid from a run's step records: every MoE layer when the records carry per-layer
     * loads, else (older metrics) the first MoE layer without an EP layout.
     *
     * @param records the step records in step order
     * @param maxColumns the most step columns
     * @return the grid, with notes on what it leaves out
     * @throws IllegalArgumentException when {@code maxColumns} is below 1
     */
    static LoadGrid of(List<StepRecord> records, int maxColumns) {
        if (maxColumns < 1) {
            throw new IllegalArgumentException("maxColumns " + maxColumns + " must be >= 1");
        }
        List<String> notes = new ArrayList<>();
        StepRecord last = null;
        for (StepRecord r : records) {
            if (r.layerLoads() != null && r.layerLoads().experts() > 0) {
                last = r;
            }
        }
        List<StepRecord> used = new ArrayList<>();
        List<long[][]> loads = new ArrayList<>();
        String[] names;
        ExpertLoads layout = null;
        if (last != null) {
            layout = last.layerLoads();
            int skipped = 0;
            int otherEp = 0;
            for (StepRecord r : records) {
                ExpertLoads l = r.layerLoads();
                if (l == null
                        || l.experts() != layout.experts()
                        || !java.util.Arrays.equals(l.layers(), layout.layers())) {
                    skipped++;
                    continue;
                }
                otherEp = l.epSize() != layout.epSize() ? l.epSize() : otherEp;
                used.add(r);
                loads.add(l.loads());
            }
            if (skipped > 0) {
                notes.add(skipped + " steps without these layers' loads are left blank");
            }
            if (otherEp != 0) {
                notes.add(
                        "the EP size changed during the run ("
                                + otherEp
                                + " -> "
                                + layout.epSize()
                                + "): ranks are marked as at step "
                                + last.step());
            }
            names = new String[layout.layers().length];
            for (int i = 0; i < names.length; i++) {
                names[i] = "layer " + layout.layers()[i];
            }
        } else {
            int experts = 0;
            for (StepRecord r : records) {
                experts = r.expertLoad().length > 0 ? r.expertLoad().length : experts;
            }
            for (StepRecord r : records) {
                if (experts > 0 && r.expertLoad().length == experts) {
                    used.add(r);
                    loads.add(new long[][] {r.expertLoad()});
                }
            }
            names = experts == 0 ? new String[0] : new String[] {"first MoE layer"};
            notes.add(
                    experts == 0
                            ? "these metrics hold no expert loads (no MoE layer?)"
                            : "these metrics predate per-layer loads and the EP layout: first MoE"
                                    + " layer only, ranks not marked");
        }
        if (used.isEmpty()) {
            return new LoadGrid(new String[0], 0, 0, 1, new double[0][][], null, notes);
        }
        long first = used.get(0).step();
        long span = used.get(used.size() - 1).step() - first + 1;
        long bin = (span + maxColumns - 1) / maxColumns;
        int columns = (int) ((span + bin - 1) / bin);
        int experts = loads.get(0)[0].length;
        long[][][] sums = new long[names.length][columns][experts];
        for (int k = 0; k < used.size(); k++) {
            int c = (int) ((used.get(k).step() - first) / bin);
            long[][] l = loads.get(k);
            for (int i = 0; i < names.length; i++) {
                for (int e = 0; e < experts; e++) {
                    sums[i][c][e] += l[i][e];
                }
            }
        }
        double[][][] share = new double[names.length][columns][experts];
        for (int i = 0; i < names.length; i++) {
            for (int c = 0; c < columns; c++) {
                long total = 0;
                for (long v : sums[i][c]) {
                    total += v;
                }
                for (int e = 0; e < experts; e++) {
                    share[i][c][e] = total == 0 ? Double.NaN : (double) sums[i][c][e] / total;
                }
            }
        }
        if (bin > 1) {
            notes.add("each column sums " + bin + " steps");
        }
        return new LoadGrid(names, experts, first, bin, share, layout, notes);
    }
}
