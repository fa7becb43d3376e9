/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.metrics;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * The expert loads of one step in every MoE layer, with the EP layout that places the experts on
 * ranks: experts {@code [r * expertsPerRank, (r + 1) * expertsPerRank)} live on rank {@code r}.
 *
 * @param epSize the EP size (ranks the experts are split over; 1 when every rank holds all)
 * @param layers the model layer index of each MoE layer (e.g. {@code [1, 2]} when layer 0 is dense)
 * @param loads {@code loads[i][e]}: tokens routed to expert e of MoE layer {@code layers[i]} in the
 *     step, over all ranks
 */
public record ExpertLoads(int epSize, int[] layers, long[][] loads) {

    /**
     * Checks the layout.
     *
     * @throws IllegalArgumentException when the EP size is below 1, the layer indices and load rows
     *     differ in number, rows differ in length, or the EP size does not divide the experts
     */
    public ExpertLoads {
        if (epSize < 1) {
            throw new IllegalArgumentException("epSize " + epSize + " must be >= 1");
        }
        if (layers.length != loads.length) {
            throw new IllegalArgumentException(
                    "layers has "
                            + layers.length
                            + " entries but loads has "
                            + loads.length
                            + " rows; they must match");
        }
        for (int i = 0; i < loads.length; i++) {
            if (loads[i].length != loads[0].length) {
                throw new IllegalArgumentException(
                        "loads row "
                                + i
                                + " has "
                                + loads[i].length
                                + " experts, row 0 has "
                                + loads[0].length
                                + "; rows must match");
            }
        }
        if (loads.length > 0 && loads[0].length % epSize != 0) {
            throw new IllegalArgumentException(
                    "epSize "
                            + epSize
                            + " does not divide the "
                            + loads[0].length
                            + " experts of each layer");
        }
    }

    /**
     * Returns the routed experts per MoE layer.
     *
     * @return the length of a load row (0 without MoE layers)
     */
    public int experts() {
        return loads.length == 0 ? 0 : loads[0].length;
    }

    /**
     * Returns how many experts each rank holds.
     *
     * @return {@code experts() / epSize}
     */
    public int expertsPerRank() {
        return experts() / epSize;
    }

    /**
     * Returns whether another step's loads have the same layers, experts and EP size (so they can
     * share one heat map with one rank layout).
     *
     * @param o the other step's loads
     * @return true when layout and shape agree
     */
    public boolean sameLayout(ExpertLoads o) {
        return epSize == o.epSize && experts() == o.experts() && Arrays.equals(layers, o.layers);
    }

    /** Appends the JSON fields {@code "ep_size"}, {@code "moe_layers"}, {@code "layer_loads"}. */
    void appendJson(StringBuilder sb) {
        sb.append("\"ep_size\":")
                .append(epSize)
                .append(",\"moe_layers\":")
                .append(Arrays.toString(layers).replace(" ", ""))
                .append(",\"layer_loads\":[");
        for (int i = 0; i < loads.length; i++) {
            sb.append(i > 0 ? "," : "").append(Arrays.toString(loads[i]).replace(" ", ""));
        }
        sb.append(']');
    }

    /**
     * Reads the fields written by {@link #appendJson} from a parsed metrics line.
     *
     * @return the loads, or null when the line has no {@code "layer_loads"} (older metrics files)
     * @throws IllegalArgumentException naming a field of the wrong shape or type
     */
    static ExpertLoads fromJson(Map<String, Object> line) {
        Object rows = line.get("layer_loads");
        if (rows == null) {
            return null;
        }
        List<?> rowList = list(rows, "layer_loads");
        long[][] loads = new long[rowList.size()][];
        for (int i = 0; i < loads.length; i++) {
            loads[i] = longs(rowList.get(i), "layer_loads[" + i + "]");
        }
        long[] ids =
                line.containsKey("moe_layers")
                        ? longs(line.get("moe_layers"), "moe_layers")
                        : indices(loads.length);
        int[] layers = new int[ids.length];
        for (int i = 0; i < ids.length; i++) {
            layers[i] = Math.toIntExact(ids[i]);
        }
        Object ep = line.get("ep_size");
        if (ep != null && !(ep instanceof Long)) {
            throw new IllegalArgumentException(
                    "metrics field 'ep_size' = '" + ep + "' is not a whole number");
        }
        return new ExpertLoads(ep == null ? 1 : Math.toIntExact((Long) ep), layers, loads);
    }

    private static long[] indices(int n) {
        long[] a = new long[n];
        for (int i = 0; i < n; i++) {
            a[i] = i;
        }
        return a;
    }

    private static List<?> list(Object v, String name) {
        if (!(v instanceof List<?> l)) {
            throw new IllegalArgumentException(
                    "metrics field '" + name + "' = '" + v + "' is not an array");
        }
        return l;
    }

    /**
     * Reads a JSON array of whole numbers.
     *
     * @throws IllegalArgumentException naming the field when it is not one
     */
    static long[] longs(Object v, String name) {
        List<?> l = list(v, name);
        List<Long> out = new ArrayList<>(l.size());
        for (Object x : l) {
            if (!(x instanceof Long n)) {
                throw new IllegalArgumentException(
                        "metrics field '" + name + "' holds '" + x + "', not a whole number");
            }
            out.add(n);
        }
        return out.stream().mapToLong(Long::longValue).toArray();
    }
}
