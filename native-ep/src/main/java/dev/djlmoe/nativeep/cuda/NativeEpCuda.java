/*
 * djl-moe: expert-parallel Mixture-of-Experts for the Deep Java Library.
 */
package dev.djlmoe.nativeep.cuda;

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
 * JavaCPP binding of the CUDA plug-in's C ABI ({@code nativeep/cuda_api.h}, library {@code
 * libnativeep_cuda.so}).
 *
 * <p>This class is separate from {@code NativeEp} so that CPU-only users never load the plug-in: it
 * is loaded the first time this class is used. The plug-in links the CUDA runtime statically and
 * needs only the NVIDIA driver at run time; without a driver {@link #nep_cuda_device_count()}
 * returns 0. A build made without nvcc ships a stand-in library whose entry points all fail with
 * {@code NEP_ERR_UNSUPPORTED}. Tensor arguments are raw device addresses; {@link CudaEpBuffer} is
 * the checked Java API over these functions.
 */
@Properties(
        target = "dev.djlmoe.nativeep.cuda.NativeEpCuda",
        value = {
            @Platform(
                    value = "linux-x86_64",
                    include = {"nativeep/cuda_api.h"},
                    link = "nativeep_cuda")
        })
public final class NativeEpCuda {

    static {
        Loader.load();
    }

    private NativeEpCuda() {}

    /** Element type fp32. */
    public static final int NEP_DTYPE_FP32 = 0;

    /** Element type bf16. */
    public static final int NEP_DTYPE_BF16 = 1;

    /** Size of one rank's exported cuda-ipc blob. */
    public static final int NEP_CUDA_EXPORT_BYTES = 256;

    /** Size of an NCCL unique id. */
    public static final int NEP_CUDA_NCCL_ID_BYTES = 128;

    /** Not connected yet. */
    public static final int NEP_CUDA_TRANSPORT_NONE = 0;

    /** CUDA IPC over NVLink (ranks of one host). */
    public static final int NEP_CUDA_TRANSPORT_IPC = 1;

    /** NCCL (ranks on several hosts). */
    public static final int NEP_CUDA_TRANSPORT_NCCL = 2;

    /** Low-latency dispatch flag: FP8 wire with scales rounded up to powers of two. */
    public static final int NEP_CUDA_LL_ROUND_SCALE = 1;

    /** Low-latency op kind: dispatch. */
    public static final int NEP_CUDA_LL_DISPATCH = 1;

    /** Low-latency op kind: combine. */
    public static final int NEP_CUDA_LL_COMBINE = 2;

    /** Opaque cuda-ipc / nccl buffer of one rank ({@code nep_cuda_buffer}). */
    @Opaque
    public static class nep_cuda_buffer extends Pointer {
        /** Creates a null handle. */
        public nep_cuda_buffer() {
            super((Pointer) null);
        }

        /**
         * Wraps a native address.
         *
         * @param p the pointer to alias
         */
        public nep_cuda_buffer(Pointer p) {
            super(p);
        }
    }

    /** Opaque routing of one dispatch ({@code nep_cuda_handle}). */
    @Opaque
    public static class nep_cuda_handle extends Pointer {
        /** Creates a null handle. */
        public nep_cuda_handle() {
            super((Pointer) null);
        }

        /**
         * Wraps a native address.
         *
         * @param p the pointer to alias
         */
        public nep_cuda_handle(Pointer p) {
            super(p);
        }
    }

    /** Opaque low-latency buffer of one rank ({@code nep_cuda_ll_buffer}). */
    @Opaque
    public static class nep_cuda_ll_buffer extends Pointer {
        /** Creates a null handle. */
        public nep_cuda_ll_buffer() {
            super((Pointer) null);
        }

        /**
         * Wraps a native address.
         *
         * @param p the pointer to alias
         */
        public nep_cuda_ll_buffer(Pointer p) {
            super(p);
        }
    }

    /** Opaque low-latency send awaiting its receive ({@code nep_cuda_ll_op}, the hook). */
    @Opaque
    public static class nep_cuda_ll_op extends Pointer {
        /** Creates a null handle. */
        public nep_cuda_ll_op() {
            super((Pointer) null);
        }

        /**
         * Wraps a native address.
         *
         * @param p the pointer to alias
         */
        public nep_cuda_ll_op(Pointer p) {
            super(p);
        }
    }

    /** Opaque routing of one low-latency dispatch ({@code nep_cuda_ll_handle}). */
    @Opaque
    public static class nep_cuda_ll_handle extends Pointer {
        /** Creates a null handle. */
        public nep_cuda_ll_handle() {
            super((Pointer) null);
        }

        /**
         * Wraps a native address.
         *
         * @param p the pointer to alias
         */
        public nep_cuda_ll_handle(Pointer p) {
            super(p);
        }
    }

    public static native int nep_cuda_abi_version();

    public static native int nep_cuda_device_count();

    // ---- device memory ----

    public static native int nep_cuda_malloc(
            int device,
            long bytes,
            @Cast("int64_t*") LongPointer address,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_free(
            int device, long address, @Cast("char*") BytePointer err, long errCap);

    public static native int nep_cuda_memcpy(
            int device,
            long dst,
            long src,
            long bytes,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_memset(
            int device,
            long address,
            int value,
            long bytes,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_device_info(
            int device,
            @Cast("char*") BytePointer name,
            long nameCap,
            @Cast("int64_t*") LongPointer totalBytes,
            @Cast("int64_t*") LongPointer freeBytes,
            IntPointer smCount,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_adamw_f32(
            int device,
            long weight,
            long grad,
            long mean,
            long variance,
            long n,
            float lr,
            float lrCorrected,
            float weightDecay,
            float beta1,
            float beta2,
            float eps,
            float gradScale,
            int zeroGrad,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    // ---- buffer ----

    public static native int nep_cuda_buffer_create(
            int rank,
            int worldSize,
            int device,
            long bufferBytes,
            long timeoutMs,
            @Cast("nep_cuda_buffer**") PointerPointer<?> out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_buffer_export(
            @Const nep_cuda_buffer buf,
            @Cast("uint8_t*") BytePointer out,
            long cap,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_buffer_connect(
            nep_cuda_buffer buf,
            @Cast("const uint8_t*") BytePointer allBlobs,
            long bytes,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_nccl_version(
            IntPointer version, @Cast("char*") BytePointer err, long errCap);

    public static native int nep_cuda_nccl_unique_id(
            @Cast("uint8_t*") BytePointer out,
            long cap,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_buffer_connect_nccl(
            nep_cuda_buffer buf,
            @Cast("const uint8_t*") BytePointer uniqueId,
            long bytes,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_buffer_transport(@Const nep_cuda_buffer buf);

    public static native int nep_cuda_all_reduce_sum(
            nep_cuda_buffer buf,
            long data,
            long count,
            int dtype,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_buffer_set_timeout(
            nep_cuda_buffer buf, long timeoutMs, @Cast("char*") BytePointer err, long errCap);

    public static native int nep_cuda_buffer_rank(@Const nep_cuda_buffer buf);

    public static native int nep_cuda_buffer_world_size(@Const nep_cuda_buffer buf);

    public static native int nep_cuda_buffer_device(@Const nep_cuda_buffer buf);

    public static native int nep_cuda_buffer_num_device_sms(@Const nep_cuda_buffer buf);

    public static native int nep_cuda_sync(
            nep_cuda_buffer buf, long stream, @Cast("char*") BytePointer err, long errCap);

    public static native void nep_cuda_buffer_destroy(nep_cuda_buffer buf);

    // ---- layout, notify, handle ----

    public static native int nep_cuda_layout(
            nep_cuda_buffer buf,
            long topkIdx,
            long numTokens,
            int numTopk,
            int numExperts,
            long tokensPerRank,
            long tokensPerExpert,
            long isTokenInRank,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_dispatch_notify(
            nep_cuda_buffer buf,
            long topkIdx,
            long numTokens,
            int numTopk,
            int numExperts,
            int expertAlignment,
            long stream,
            @Cast("nep_cuda_handle**") PointerPointer<?> out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native long nep_cuda_handle_num_tokens(@Const nep_cuda_handle h);

    public static native long nep_cuda_handle_num_recv(@Const nep_cuda_handle h);

    public static native int nep_cuda_handle_num_topk(@Const nep_cuda_handle h);

    public static native int nep_cuda_handle_num_experts(@Const nep_cuda_handle h);

    public static native int nep_cuda_handle_num_local_experts(@Const nep_cuda_handle h);

    public static native void nep_cuda_handle_recv_tokens_per_expert(
            @Const nep_cuda_handle h, int aligned, IntPointer out);

    public static native void nep_cuda_handle_rank_prefix_matrix(
            @Const nep_cuda_handle h, IntPointer out);

    public static native void nep_cuda_handle_rank_num_tokens(
            @Const nep_cuda_handle h, IntPointer out);

    public static native int nep_cuda_handle_copy_is_token_in_rank(
            @Const nep_cuda_handle h,
            @Cast("uint8_t*") BytePointer out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_handle_copy_recv_src_idx(
            @Const nep_cuda_handle h, IntPointer out, @Cast("char*") BytePointer err, long errCap);

    public static native void nep_cuda_handle_destroy(nep_cuda_handle h);

    // ---- dispatch and combine ----

    public static native int nep_cuda_dispatch(
            nep_cuda_buffer buf,
            nep_cuda_handle h,
            long x,
            int xDtype,
            long hidden,
            int wire,
            long topkIdx,
            long topkWeights,
            long recvX,
            int recvDtype,
            long recvTopkIdx,
            long recvTopkWeights,
            int numSms,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    /** {@code nep_cuda_dispatch} into wire rows (FP8 / MXFP8 rows kept as they travelled). */
    public static native int nep_cuda_dispatch_wire(
            nep_cuda_buffer buf,
            nep_cuda_handle h,
            long x,
            int xDtype,
            long hidden,
            int wire,
            long topkIdx,
            long topkWeights,
            long recvRows,
            long recvRowBytes,
            long recvTopkIdx,
            long recvTopkWeights,
            int numSms,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    /** Decodes wire rows of {@code nep_cuda_dispatch_wire} into float32 rows. */
    public static native int nep_cuda_decode_wire_rows(
            int device,
            int wire,
            long in,
            long rows,
            long hidden,
            long rowBytes,
            long out,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_combine(
            nep_cuda_buffer buf,
            @Const nep_cuda_handle h,
            long y,
            int yDtype,
            long hidden,
            int wire,
            long yWeights,
            long out,
            int outDtype,
            long outWeights,
            int numSms,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    // ---- low-latency mode (decoding; cuda_api.h "Low-latency mode") ----

    public static native int nep_cuda_ll_buffer_create(
            int rank,
            int worldSize,
            int device,
            long maxTokensPerRank,
            long hidden,
            int numExperts,
            int maxTopk,
            int maxWire,
            long timeoutMs,
            @Cast("nep_cuda_ll_buffer**") PointerPointer<?> out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_ll_buffer_export(
            @Const nep_cuda_ll_buffer buf,
            @Cast("uint8_t*") BytePointer out,
            long cap,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_ll_buffer_connect(
            nep_cuda_ll_buffer buf,
            @Cast("const uint8_t*") BytePointer allBlobs,
            long bytes,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_ll_buffer_set_num_sms(
            nep_cuda_ll_buffer buf, int numSms, @Cast("char*") BytePointer err, long errCap);

    public static native int nep_cuda_ll_buffer_set_timeout(
            nep_cuda_ll_buffer buf, long timeoutMs, @Cast("char*") BytePointer err, long errCap);

    public static native long nep_cuda_ll_buffer_max_tokens_per_rank(@Const nep_cuda_ll_buffer buf);

    public static native long nep_cuda_ll_buffer_hidden(@Const nep_cuda_ll_buffer buf);

    public static native int nep_cuda_ll_buffer_num_experts(@Const nep_cuda_ll_buffer buf);

    public static native int nep_cuda_ll_buffer_num_local_experts(@Const nep_cuda_ll_buffer buf);

    public static native int nep_cuda_ll_buffer_max_topk(@Const nep_cuda_ll_buffer buf);

    public static native int nep_cuda_ll_buffer_max_wire(@Const nep_cuda_ll_buffer buf);

    public static native int nep_cuda_ll_buffer_rank(@Const nep_cuda_ll_buffer buf);

    public static native int nep_cuda_ll_buffer_world_size(@Const nep_cuda_ll_buffer buf);

    public static native int nep_cuda_ll_buffer_device(@Const nep_cuda_ll_buffer buf);

    public static native int nep_cuda_ll_buffer_num_sms(@Const nep_cuda_ll_buffer buf);

    public static native long nep_cuda_ll_buffer_bytes(@Const nep_cuda_ll_buffer buf);

    public static native int nep_cuda_ll_sync(
            nep_cuda_ll_buffer buf, long stream, @Cast("char*") BytePointer err, long errCap);

    public static native int nep_cuda_ll_buffer_poison(
            nep_cuda_ll_buffer buf, long stream, @Cast("char*") BytePointer err, long errCap);

    public static native void nep_cuda_ll_buffer_destroy(nep_cuda_ll_buffer buf);

    public static native int nep_cuda_ll_dispatch_send(
            nep_cuda_ll_buffer buf,
            long x,
            int xDtype,
            long numTokens,
            long hidden,
            long topkIdx,
            int numTopk,
            int wire,
            int flags,
            long stream,
            @Cast("nep_cuda_ll_op**") PointerPointer<?> out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_ll_dispatch_recv(
            nep_cuda_ll_op op,
            long recvX,
            int recvDtype,
            long recvCount,
            long recvSrcInfo,
            long recvLayoutRange,
            long stream,
            @Cast("nep_cuda_ll_handle**") PointerPointer<?> outHandle,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_ll_combine_send(
            nep_cuda_ll_buffer buf,
            @Const nep_cuda_ll_handle h,
            long y,
            int yDtype,
            long topkIdx,
            long topkWeights,
            int wire,
            long stream,
            @Cast("nep_cuda_ll_op**") PointerPointer<?> out,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_ll_combine_recv(
            nep_cuda_ll_op op,
            long out,
            int outDtype,
            long stream,
            @Cast("char*") BytePointer err,
            long errCap);

    public static native int nep_cuda_ll_op_kind(@Const nep_cuda_ll_op op);

    public static native int nep_cuda_ll_op_is_pending(@Const nep_cuda_ll_op op);

    public static native long nep_cuda_ll_op_call_index(@Const nep_cuda_ll_op op);

    public static native long nep_cuda_ll_op_num_tokens(@Const nep_cuda_ll_op op);

    public static native void nep_cuda_ll_op_destroy(nep_cuda_ll_op op);

    public static native long nep_cuda_ll_handle_num_tokens(@Const nep_cuda_ll_handle h);

    public static native int nep_cuda_ll_handle_num_topk(@Const nep_cuda_ll_handle h);

    public static native long nep_cuda_ll_handle_call_index(@Const nep_cuda_ll_handle h);

    public static native void nep_cuda_ll_handle_destroy(nep_cuda_ll_handle h);
}
