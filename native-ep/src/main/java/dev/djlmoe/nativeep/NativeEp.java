/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;
import org.bytedeco.javacpp.annotation.Cast;
import org.bytedeco.javacpp.annotation.Const;
import org.bytedeco.javacpp.annotation.Opaque;
import org.bytedeco.javacpp.annotation.Platform;
import org.bytedeco.javacpp.annotation.Properties;

/**
 * JavaCPP binding of the native-ep C ABI ({@code nativeep/c_api.h}).
 *
 * <p>Every tensor argument is the raw address of a contiguous buffer (CPU memory or, for the CUDA
 * entry points, device memory). Functions that can fail return a status ({@link #NEP_OK} on
 * success) and write a message into {@code err}. Callers check it through {@code
 * dev.djlmoe.core.NativeCall#check} (a module above this one) rather than call these methods
 * directly; the higher-level API lives in {@code dev.djlmoe.ep}.
 */
@Properties(
        target = "dev.djlmoe.nativeep.NativeEp",
        value = {
            @Platform(
                    value = "linux-x86_64",
                    include = {"nativeep/c_api.h"},
                    link = "nativeep")
        })
public final class NativeEp {

    static {
        Loader.load();
    }

    private NativeEp() {}

    /** Success. */
    public static final int NEP_OK = 0;

    /** A shape, index, dtype or range check failed. */
    public static final int NEP_ERR_INVALID_ARGUMENT = 1;

    /** A size exceeds a buffer or a documented limit. */
    public static final int NEP_ERR_CAPACITY = 2;

    /** A wait expired. */
    public static final int NEP_ERR_TIMEOUT = 3;

    /** A peer failed, left or disagreed on a collective call. */
    public static final int NEP_ERR_PEER = 4;

    /** The feature is not built in or not available here. */
    public static final int NEP_ERR_UNSUPPORTED = 5;

    /** A system call or an invariant failed. */
    public static final int NEP_ERR_INTERNAL = 6;

    /** Opaque communicator ({@code nep_comm}). */
    @Opaque
    public static class nep_comm extends Pointer {
        /** Creates a null handle. */
        public nep_comm() {
            super((Pointer) null);
        }

        /**
         * Wraps a native address.
         *
         * @param p the pointer to alias
         */
        public nep_comm(Pointer p) {
            super(p);
        }
    }

    /** Opaque dispatch handle ({@code nep_handle}). */
    @Opaque
    public static class nep_handle extends Pointer {
        /** Creates a null handle. */
        public nep_handle() {
            super((Pointer) null);
        }

        /**
         * Wraps a native address.
         *
         * @param p the pointer to alias
         */
        public nep_handle(Pointer p) {
            super(p);
        }
    }

    // ---- version and codecs ----

    /**
     * @return the ABI version of the loaded library
     */
    public static native int nep_abi_version();

    /**
     * @param wire wire format code
     * @param hidden channels per row
     * @return bytes per encoded row, or -1 when invalid
     */
    public static native long nep_wire_row_bytes(int wire, long hidden);

    public static native int nep_encode_rows(
            int wire,
            long x,
            long rows,
            long hidden,
            long out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_decode_rows(
            int wire,
            long in,
            long rows,
            long hidden,
            long out,
            @Cast("char*") BytePointer err,
            long errCap);

    // ---- layout ----

    public static native int nep_layout(
            long topkIdx,
            long numTokens,
            int numTopk,
            int numExperts,
            int worldSize,
            long tokensPerRank,
            long tokensPerExpert,
            long isTokenInRank,
            @Cast("char*") BytePointer err,
            long errCap);

    // ---- communicators ----

    public static native int nep_comm_create_loopback(
            @Cast("nep_comm**") PointerPointer<?> out, @Cast("char*") BytePointer err, long errCap);

    public static native int nep_comm_rank(@Const nep_comm comm);

    public static native int nep_comm_world_size(@Const nep_comm comm);

    public static native void nep_comm_destroy(nep_comm comm);

    // ---- dispatch / combine ----

    public static native int nep_dispatch_notify(
            nep_comm comm,
            long topkIdx,
            long numTokens,
            int numTopk,
            int numExperts,
            int expertAlignment,
            @Cast("nep_handle**") PointerPointer<?> out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native long nep_handle_num_tokens(@Const nep_handle h);

    public static native long nep_handle_num_recv(@Const nep_handle h);

    public static native int nep_handle_num_topk(@Const nep_handle h);

    public static native int nep_handle_num_experts(@Const nep_handle h);

    public static native int nep_handle_num_local_experts(@Const nep_handle h);

    public static native int nep_handle_world_size(@Const nep_handle h);

    public static native void nep_handle_recv_tokens_per_expert(
            @Const nep_handle h, int aligned, IntPointer out);

    public static native void nep_handle_rank_prefix_matrix(@Const nep_handle h, IntPointer out);

    public static native void nep_handle_recv_src_idx(@Const nep_handle h, IntPointer out);

    public static native void nep_handle_is_token_in_rank(
            @Const nep_handle h, @Cast("uint8_t*") BytePointer out);

    public static native void nep_handle_destroy(nep_handle h);

    /**
     * {@code nep_dispatch} into wire rows: {@code recvRows [R, recvRowBytes]} uint8 receives each
     * row's FP8 or MXFP8 wire bytes unchanged (see {@code c_api.h}).
     */
    public static native int nep_dispatch_wire(
            nep_comm comm,
            @Const nep_handle h,
            long x,
            long hidden,
            int wire,
            long topkWeights,
            long recvRows,
            long recvRowBytes,
            long recvTopkIdx,
            long recvTopkWeights,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_dispatch(
            nep_comm comm,
            @Const nep_handle h,
            long x,
            long hidden,
            int wire,
            long topkWeights,
            long recvX,
            long recvTopkIdx,
            long recvTopkWeights,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_combine(
            nep_comm comm,
            @Const nep_handle h,
            long y,
            long hidden,
            int wire,
            long yWeights,
            long out,
            long outWeights,
            @Cast("char*") BytePointer err,
            long errCap);

    // ---- rendezvous store ----

    /** Opaque store server ({@code nep_store_server}). */
    @Opaque
    public static class nep_store_server extends Pointer {
        /** Creates a null handle. */
        public nep_store_server() {
            super((Pointer) null);
        }

        /**
         * Wraps a native address.
         *
         * @param p the pointer to alias
         */
        public nep_store_server(Pointer p) {
            super(p);
        }
    }

    /** Opaque store client ({@code nep_store}). */
    @Opaque
    public static class nep_store extends Pointer {
        /** Creates a null handle. */
        public nep_store() {
            super((Pointer) null);
        }

        /**
         * Wraps a native address.
         *
         * @param p the pointer to alias
         */
        public nep_store(Pointer p) {
            super(p);
        }
    }

    public static native int nep_store_server_create(
            String host,
            int port,
            String jobToken,
            @Cast("nep_store_server**") PointerPointer<?> out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_store_server_port(@Const nep_store_server server);

    public static native void nep_store_server_destroy(nep_store_server server);

    public static native int nep_store_connect(
            String host,
            int port,
            String jobToken,
            long timeoutMs,
            @Cast("nep_store**") PointerPointer<?> out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_store_set(
            nep_store store,
            String key,
            @Cast("const char*") BytePointer value,
            long valueLen,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_store_get(
            nep_store store,
            String key,
            @Cast("char*") BytePointer value,
            long cap,
            @Cast("int64_t*") LongPointer valueLen,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_store_wait(
            nep_store store,
            String key,
            long timeoutMs,
            @Cast("char*") BytePointer value,
            long cap,
            @Cast("int64_t*") LongPointer valueLen,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_store_add(
            nep_store store,
            String key,
            long delta,
            @Cast("int64_t*") LongPointer result,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native void nep_store_close(nep_store store);

    // ---- multi-process communicators and collectives ----

    public static native int nep_comm_create_shm(
            int rank,
            int worldSize,
            int localRank,
            int localWorldSize,
            String storeHost,
            int storePort,
            String jobToken,
            long timeoutMs,
            @Cast("nep_comm**") PointerPointer<?> out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_all_reduce_sum_f32(
            nep_comm comm, long data, long count, @Cast("char*") BytePointer err, long errCap);

    public static native int nep_all_reduce_sum_f64(
            nep_comm comm, long data, long count, @Cast("char*") BytePointer err, long errCap);

    public static native int nep_all_gather(
            nep_comm comm,
            long in,
            long bytes,
            long out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_barrier(
            nep_comm comm, @Cast("char*") BytePointer err, long errCap);

    // ---- low-latency mode ----

    /** Flag of {@link #nep_ll_dispatch_send}: FP8 scales rounded up to powers of two. */
    public static final int NEP_LL_ROUND_SCALE = 1;

    /** {@link #nep_ll_op_kind} of a dispatch. */
    public static final int NEP_LL_DISPATCH = 1;

    /** {@link #nep_ll_op_kind} of a combine. */
    public static final int NEP_LL_COMBINE = 2;

    /** Opaque low-latency buffer ({@code nep_ll_buffer}). */
    @Opaque
    public static class nep_ll_buffer extends Pointer {
        /** Creates a null handle. */
        public nep_ll_buffer() {
            super((Pointer) null);
        }

        /**
         * Wraps a native address.
         *
         * @param p the pointer to alias
         */
        public nep_ll_buffer(Pointer p) {
            super(p);
        }
    }

    /** Opaque issued low-latency send whose receive is pending ({@code nep_ll_op}). */
    @Opaque
    public static class nep_ll_op extends Pointer {
        /** Creates a null handle. */
        public nep_ll_op() {
            super((Pointer) null);
        }

        /**
         * Wraps a native address.
         *
         * @param p the pointer to alias
         */
        public nep_ll_op(Pointer p) {
            super(p);
        }
    }

    /** Opaque routing of one low-latency dispatch ({@code nep_ll_handle}). */
    @Opaque
    public static class nep_ll_handle extends Pointer {
        /** Creates a null handle. */
        public nep_ll_handle() {
            super((Pointer) null);
        }

        /**
         * Wraps a native address.
         *
         * @param p the pointer to alias
         */
        public nep_ll_handle(Pointer p) {
            super(p);
        }
    }

    public static native int nep_ll_buffer_create(
            nep_comm comm,
            long maxTokensPerRank,
            long hidden,
            int numExperts,
            int maxTopk,
            int maxWire,
            long timeoutMs,
            @Cast("nep_ll_buffer**") PointerPointer<?> out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native long nep_ll_buffer_max_tokens_per_rank(@Const nep_ll_buffer buf);

    public static native long nep_ll_buffer_hidden(@Const nep_ll_buffer buf);

    public static native int nep_ll_buffer_num_experts(@Const nep_ll_buffer buf);

    public static native int nep_ll_buffer_num_local_experts(@Const nep_ll_buffer buf);

    public static native int nep_ll_buffer_max_topk(@Const nep_ll_buffer buf);

    public static native int nep_ll_buffer_max_wire(@Const nep_ll_buffer buf);

    public static native int nep_ll_buffer_rank(@Const nep_ll_buffer buf);

    public static native int nep_ll_buffer_world_size(@Const nep_ll_buffer buf);

    public static native long nep_ll_buffer_bytes(@Const nep_ll_buffer buf);

    public static native void nep_ll_buffer_destroy(nep_ll_buffer buf);

    public static native int nep_ll_dispatch_send(
            nep_ll_buffer buf,
            long x,
            long numTokens,
            long hidden,
            long topkIdx,
            int numTopk,
            int wire,
            int flags,
            @Cast("nep_ll_op**") PointerPointer<?> out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_ll_dispatch_recv(
            nep_ll_op op,
            long recvX,
            long recvCount,
            long recvSrcInfo,
            long recvLayoutRange,
            @Cast("nep_ll_handle**") PointerPointer<?> outHandle,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_ll_combine_send(
            nep_ll_buffer buf,
            @Const nep_ll_handle h,
            long y,
            long hidden,
            long topkIdx,
            long topkWeights,
            long numTokens,
            int numTopk,
            int wire,
            @Cast("nep_ll_op**") PointerPointer<?> out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_ll_combine_recv(
            nep_ll_op op, long out, @Cast("char*") BytePointer err, long errCap);

    public static native int nep_ll_op_ready(nep_ll_op op);

    public static native int nep_ll_op_kind(@Const nep_ll_op op);

    public static native int nep_ll_op_is_pending(@Const nep_ll_op op);

    public static native long nep_ll_op_call_index(@Const nep_ll_op op);

    public static native long nep_ll_op_rows_sent(@Const nep_ll_op op);

    public static native long nep_ll_op_bytes_sent(@Const nep_ll_op op);

    public static native void nep_ll_op_destroy(nep_ll_op op);

    public static native long nep_ll_handle_num_tokens(@Const nep_ll_handle h);

    public static native int nep_ll_handle_num_topk(@Const nep_ll_handle h);

    public static native int nep_ll_handle_num_local_experts(@Const nep_ll_handle h);

    public static native int nep_ll_handle_world_size(@Const nep_ll_handle h);

    public static native long nep_ll_handle_max_tokens_per_rank(@Const nep_ll_handle h);

    public static native long nep_ll_handle_hidden(@Const nep_ll_handle h);

    public static native void nep_ll_handle_recv_count(@Const nep_ll_handle h, IntPointer out);

    public static native void nep_ll_handle_src_info(@Const nep_ll_handle h, IntPointer out);

    public static native void nep_ll_handle_layout_range(
            @Const nep_ll_handle h, @Cast("int64_t*") LongPointer out);

    public static native void nep_ll_handle_destroy(nep_ll_handle h);

    // ---- libtorch tensors ----

    /** Element type float32 of {@link #nep_torch_data_address}. */
    public static final int NEP_TORCH_FLOAT32 = 0;

    /** Element type float16. */
    public static final int NEP_TORCH_FLOAT16 = 1;

    /** Element type int64. */
    public static final int NEP_TORCH_INT64 = 2;

    /** Element type int32. */
    public static final int NEP_TORCH_INT32 = 3;

    /** Element type uint8. */
    public static final int NEP_TORCH_UINT8 = 4;

    /** Element type bool. */
    public static final int NEP_TORCH_BOOL = 5;

    /** Element type float64. */
    public static final int NEP_TORCH_FLOAT64 = 6;

    /**
     * Data address of a libtorch tensor (CPU or GPU memory) from the address of its {@code
     * at::Tensor} (a DJL {@code PtNDArray} handle), without a copy.
     *
     * @param tensor the tensor object's address
     * @param elementType one of the {@code NEP_TORCH_*} types, the tensor's own
     * @param address receives the data address
     * @param err message buffer
     * @param errCap its capacity
     * @return a status
     */
    public static native int nep_torch_data_address(
            long tensor,
            int elementType,
            @Cast("int64_t*") LongPointer address,
            @Cast("char*") BytePointer err,
            long errCap);

    /**
     * Sets libtorch's C++ log threshold in this process (0 info, 1 warning, 2 error, 3 fatal):
     * messages below it, such as one-time deprecation warnings, are not printed. libtorch must
     * already be loaded (DJL's PyTorch engine started).
     *
     * @param level the threshold, in [0, 3]
     * @param previous receives the threshold before the call (may be null)
     * @param err message buffer
     * @param errCap its capacity
     * @return a status
     */
    public static native int nep_torch_set_log_level(
            int level, IntPointer previous, @Cast("char*") BytePointer err, long errCap);
}
