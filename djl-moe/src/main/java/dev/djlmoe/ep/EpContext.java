/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.ep;

import dev.djlmoe.autograd.Tape;
import dev.djlmoe.dist.ProcessGroup;
import java.time.Duration;

/**
 * What the MoE layers of one model share on one rank: the process group, the EP buffer, the wire
 * formats and the tape of the running training step.
 *
 * <p>A training step calls {@link #beginTape()}; MoE layers that run in training mode record
 * dispatch and combine on that tape. Not thread-safe: one training loop per rank.
 */
public final class EpContext implements AutoCloseable {

    private final ProcessGroup group;
    private final EpBuffer buffer;
    private final WireFormat dispatchWire;
    private final WireFormat combineWire;
    private final WireFormat backwardWire;
    private final int expertAlignment;
    private Tape tape;

    private EpContext(Builder b) {
        group = b.group;
        EpBuffer.Builder eb = EpBuffer.builder().setGroup(group);
        if (b.cudaBufferBytes != null) {
            eb.optCudaBufferBytes(b.cudaBufferBytes);
        }
        if (b.numSms != null) {
            eb.optNumSms(b.numSms);
        }
        if (b.timeout != null) {
            eb.optTimeout(b.timeout);
        }
        buffer = eb.build();
        dispatchWire = b.dispatchWire;
        combineWire = b.combineWire;
        backwardWire = b.backwardWire;
        expertAlignment = b.expertAlignment;
    }

    /**
     * Creates a builder.
     *
     * @return a new builder
     */
    public static Builder builder() {
        return new Builder();
    }

    /**
     * Returns the process group.
     *
     * @return the group
     */
    public ProcessGroup group() {
        return group;
    }

    /**
     * Returns the EP buffer.
     *
     * @return the buffer
     */
    public EpBuffer buffer() {
        return buffer;
    }

    /**
     * Returns the wire format of dispatch.
     *
     * @return the format
     */
    public WireFormat dispatchWire() {
        return dispatchWire;
    }

    /**
     * Returns the wire format of combine.
     *
     * @return the format
     */
    public WireFormat combineWire() {
        return combineWire;
    }

    /**
     * Returns the wire format of the gradients' communication in backward.
     *
     * @return the format
     */
    public WireFormat backwardWire() {
        return backwardWire;
    }

    /**
     * Returns the padding of each local expert's received count.
     *
     * @return the alignment (>= 1)
     */
    public int expertAlignment() {
        return expertAlignment;
    }

    /**
     * Starts the tape of a training step; closing the tape ends it.
     *
     * @return the new tape
     */
    public Tape beginTape() {
        if (tape != null) {
            throw new IllegalStateException("a tape is already active on this EpContext");
        }
        Tape t = new Tape();
        t.keepUntilClose(() -> tape = null);
        tape = t;
        return t;
    }

    /**
     * Returns the active tape, or null outside a training step.
     *
     * @return the tape
     */
    public Tape tape() {
        return tape;
    }

    @Override
    public void close() {
        buffer.close();
    }

    /** Builds an {@link EpContext}. */
    public static final class Builder {
        private ProcessGroup group;
        private WireFormat dispatchWire = WireFormat.FP32;
        private WireFormat combineWire = WireFormat.FP32;
        private WireFormat backwardWire = WireFormat.FP32;
        private int expertAlignment = 1;
        private Long cudaBufferBytes;
        private Integer numSms;
        private Duration timeout;

        Builder() {}

        /**
         * Sets the process group (required).
         *
         * @param group the group
         * @return this builder
         */
        public Builder setProcessGroup(ProcessGroup group) {
            this.group = group;
            return this;
        }

        /**
         * Sets the dispatch wire format (default fp32).
         *
         * @param wire the format
         * @return this builder
         */
        public Builder optDispatchWire(WireFormat wire) {
            this.dispatchWire = wire;
            return this;
        }

        /**
         * Sets the combine wire format (default fp32).
         *
         * @param wire the format
         * @return this builder
         */
        public Builder optCombineWire(WireFormat wire) {
            this.combineWire = wire;
            return this;
        }

        /**
         * Sets the wire format of gradients in backward (default fp32).
         *
         * @param wire the format
         * @return this builder
         */
        public Builder optBackwardWire(WireFormat wire) {
            this.backwardWire = wire;
            return this;
        }

        /**
         * Pads each local expert's received count to a multiple of {@code alignment} (32 for MXFP8
         * grouped GEMMs).
         *
         * @param alignment the alignment, >= 1
         * @return this builder
         */
        public Builder optExpertAlignment(int alignment) {
            this.expertAlignment = alignment;
            return this;
        }

        /**
         * Sets the size of each rank's GPU buffer (default {@link
         * EpBuffer#DEFAULT_CUDA_BUFFER_BYTES}); used when the arrays are on a GPU.
         *
         * @param bytes the size, at least {@link EpBuffer#MIN_CUDA_BUFFER_BYTES}
         * @return this builder
         */
        public Builder optCudaBufferBytes(long bytes) {
            this.cudaBufferBytes = bytes;
            return this;
        }

        /**
         * Sets the multiprocessors the GPU kernels use (default {@link EpBuffer#DEFAULT_NUM_SMS},
         * capped by the device).
         *
         * @param sms the count
         * @return this builder
         */
        public Builder optNumSms(int sms) {
            this.numSms = sms;
            return this;
        }

        /**
         * Sets how long a collective waits for its peers before failing.
         *
         * @param t the timeout
         * @return this builder
         */
        public Builder optTimeout(Duration t) {
            this.timeout = t;
            return this;
        }

        /**
         * Builds the context.
         *
         * @return the context
         */
        public EpContext build() {
            if (group == null) {
                throw new IllegalArgumentException("EpContext: setProcessGroup is required");
            }
            if (dispatchWire == null || combineWire == null || backwardWire == null) {
                throw new IllegalArgumentException("EpContext: wire formats must not be null");
            }
            if (expertAlignment < 1) {
                throw new IllegalArgumentException(
                        "EpContext: expert alignment " + expertAlignment + " must be >= 1");
            }
            return new EpContext(this);
        }
    }
}
