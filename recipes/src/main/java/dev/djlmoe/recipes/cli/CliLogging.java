/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.recipes.cli;

import ai.djl.engine.Engine;
import dev.djlmoe.core.NativeCall;
import dev.djlmoe.nativeep.NativeEp;
import java.util.Locale;
import org.bytedeco.javacpp.IntPointer;

/**
 * How much the command line logs. By default it is quiet: DJL's start-up lines (GPU probing, the
 * engine's thread counts) and libtorch's one-time C++ warnings are hidden, and only djl-moe's own
 * notes and real errors show. {@code --verbose} or {@code --log-level LEVEL}, or the environment
 * variable {@value #ENV}, bring them back. The launcher passes the level on to its ranks through
 * that variable.
 *
 * <p>The Java side is slf4j-simple, configured through its system properties before the first
 * logger exists (an explicit {@code -Dorg.slf4j.simpleLogger...} wins); the libtorch side is its
 * log threshold, set once the engine is loaded ({@link #startEngine}).
 */
public final class CliLogging {

    /** Environment variable with the log level of a djl-moe process (the launcher sets it). */
    public static final String ENV = "DJL_MOE_LOG_LEVEL";

    private static final String PREFIX = "org.slf4j.simpleLogger.";

    /** The levels, least to most output. */
    public enum Level {
        /** Errors only. */
        ERROR,
        /** Warnings and errors of every library, libtorch's included. */
        WARN,
        /** Also every library's informational lines (DJL's start-up). */
        INFO,
        /** Debugging output. */
        DEBUG,
        /** Everything. */
        TRACE;

        /**
         * Parses a level name.
         *
         * @param name error, warn, info, debug or trace (any case)
         * @param source what named it, for the error message
         * @return the level
         * @throws IllegalArgumentException naming the source and value when unknown
         */
        public static Level parse(String name, String source) {
            try {
                return valueOf(name.trim().toUpperCase(Locale.ROOT));
            } catch (IllegalArgumentException e) {
                throw new IllegalArgumentException(
                        source + " '" + name + "' is not one of error, warn, info, debug, trace",
                        e);
            }
        }

        /**
         * Returns libtorch's threshold for this level (0 info, 1 warning, 2 error).
         *
         * @return the threshold
         */
        int torchThreshold() {
            return switch (this) {
                case ERROR -> 2;
                case WARN -> 1;
                default -> 0;
            };
        }
    }

    /** null: the quiet default. */
    private static volatile Level chosen;

    private CliLogging() {}

    /**
     * Decides the level: the command line's choice, else {@value #ENV}, else the quiet default.
     *
     * @param flag the {@code --log-level} value, or null
     * @param verbose whether {@code --verbose} was given (means {@code info})
     * @param env the value of {@value #ENV}, or null
     * @return the level, or null for the quiet default
     * @throws IllegalArgumentException for an unknown level name
     */
    public static Level resolve(String flag, boolean verbose, String env) {
        if (flag != null) {
            Level l = Level.parse(flag, "--log-level");
            return verbose && l.compareTo(Level.INFO) < 0 ? Level.INFO : l;
        }
        if (verbose) {
            return Level.INFO;
        }
        if (env != null && !env.isBlank()) {
            return Level.parse(env, ENV);
        }
        return null;
    }

    /**
     * Configures slf4j-simple for a level (null: the quiet default, where DJL logs errors only and
     * djl-moe's own loggers their notes). Has an effect only before the first logger is created,
     * and never overrides a property already set.
     *
     * @param level the level, or null for the quiet default
     */
    public static void configure(Level level) {
        chosen = level;
        if (level == null) {
            setIfAbsent(PREFIX + "defaultLogLevel", "warn");
            setIfAbsent(PREFIX + "log.ai.djl", "error");
            setIfAbsent(PREFIX + "log.dev.djlmoe", "info");
        } else {
            setIfAbsent(PREFIX + "defaultLogLevel", level.name().toLowerCase(Locale.ROOT));
        }
    }

    /**
     * Returns the level chosen by {@link #configure}, as the text of {@value #ENV} for child
     * processes, or null for the quiet default.
     *
     * @return the level name, or null
     */
    public static String chosenName() {
        Level l = chosen;
        return l == null ? null : l.name().toLowerCase(Locale.ROOT);
    }

    /**
     * Starts DJL's PyTorch engine and sets libtorch's log threshold to match the level: with the
     * quiet default or {@code error} its one-time deprecation warnings are hidden.
     */
    public static void startEngine() {
        Engine.getInstance();
        Level l = chosen;
        setTorchLogLevel(l == null ? Level.ERROR.torchThreshold() : l.torchThreshold());
    }

    /**
     * Sets libtorch's C++ log threshold of this process (the engine must be started).
     *
     * @param threshold 0 info, 1 warning, 2 error, 3 fatal
     * @return the threshold before the call
     * @throws IllegalArgumentException naming the threshold when it is outside [0, 3]
     */
    public static int setTorchLogLevel(int threshold) {
        if (threshold < 0 || threshold > 3) {
            throw new IllegalArgumentException(
                    "libtorch log threshold " + threshold + " is outside [0, 3]");
        }
        try (NativeCall call = new NativeCall();
                IntPointer previous = new IntPointer(1)) {
            call.check(
                    NativeEp.nep_torch_set_log_level(threshold, previous, call.err(), call.cap()),
                    "setting libtorch's log threshold");
            return previous.get();
        }
    }

    private static void setIfAbsent(String key, String value) {
        if (System.getProperty(key) == null) {
            System.setProperty(key, value);
        }
    }
}
