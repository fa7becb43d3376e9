// GPU test of the grouped FP8 GEMMs (include/nativeep/gemm_api.h), one process on GPU 0: every
// CUDA quantiser against the CPU path's bytes (equal, byte for byte), and every GEMM of every tier
// against the CPU path on the same quantised inputs, outputs poisoned with NaN first so an
// unwritten row shows. Cases: odd shapes, empty experts, one token, a hot expert, group starts
// off any tile boundary, the activation gradient's transposed weights, the K-grouped weight
// gradient, the fused SwiGLU quantisers, the weight quantisers alone (both orientations, blocks cut
// at the edges, unaligned shapes and addresses), and the 16B expert shape (24,576 rows over 64
// experts, H = 2048, I = 1408, uneven).
//
// Bound, GPU against CPU: both promote the same block partial sums by the same float operations;
// they differ only in how the tensor core rounds inside a block (its accumulator keeps about 14
// bits, as DeepSeek-V3 measured on Hopper), so |C_gpu - C_cpu| <= 2^-10 * S, S the sum over k of
// |a_k b_k| of the dequantised operands (a block's error, 4 MMA steps of at most 2^-13 S_block
// each, is below 2^-11 S_block). Rows outside every group must keep their poison.
// The small cases are also checked against float32 of the unquantised inputs (loose: 0.14 S_float
// for FP8_BLOCK, 0.25 S_float for MXFP8, whose power-of-two scales clip the top of a block).
// The Hopper tier takes k and lda multiples of 16 only: the cases with other k run on the portable
// tier alone (the Hopper tier's refusal is printed as a skip).
// Large shapes are checked on sampled rows (first, middle and last row of each group) and, for the
// weight gradient, on three groups (the first, the hot one and the last).
// Every case runs on the portable tier first and on the Hopper tier after all of them, so a fault
// of one tier cannot hide the other's results; a GPU that does not finish within two minutes of a
// launch fails the run, naming what it was running.
//
//   gemm_test [--quick] [--probe-gpu]   exit 0: all passed; 1: a failure; 77: no GPU
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "gemm_shapes.h"
#include "gpu_common.h"
#include "nativeep/cuda_api.h"
#include "nativeep/gemm_api.h"

using namespace nepgpu;

namespace {

int g_fail = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++g_fail;
    std::printf("FAIL %s\n", what.c_str());
  }
}

// Absolute slack of the GPU-vs-CPU bound: promotions whose scaled result is subnormal round at
// 2^-149 absolute, not relative to S (a few such roundings per output).
constexpr double kSubnormalSlack = 0x1p-143;

const char* format_name(int32_t f) { return f == NEP_GEMM_FP8_BLOCK ? "fp8-block" : "mxfp8"; }
int64_t block_of(int32_t f) { return f == NEP_GEMM_FP8_BLOCK ? 128 : 32; }

double e4m3_value(uint8_t c) {
  const int sign = (c & 0x80) ? -1 : 1, exp = (c >> 3) & 0xF, man = c & 7;
  if ((c & 0x7F) == 0x7F) return std::nan("");
  if (exp == 0) return sign * man * std::ldexp(1.0, -9);
  return sign * (1.0 + man / 8.0) * std::ldexp(1.0, exp - 7);
}

double scale_value(int32_t f, const uint8_t* s, int64_t j) {
  if (f == NEP_GEMM_FP8_BLOCK) {
    float v;
    std::memcpy(&v, s + 4 * j, 4);
    return v;
  }
  return std::ldexp(1.0, int(s[j]) - 127);
}

// |e4m3 value| of every code (NaN codes stay NaN).
const double* abs_e4m3() {
  static const std::vector<double> lut = [] {
    std::vector<double> t(256);
    for (int c = 0; c < 256; ++c) t[c] = std::fabs(e4m3_value(uint8_t(c)));
    return t;
  }();
  return lut.data();
}

// |dequantised| row of k elements q with scales s (one per block of the format, row-major).
void abs_row(int32_t f, const uint8_t* q, const uint8_t* s, int64_t k, double* out) {
  const double* lut = abs_e4m3();
  for (int64_t i = 0; i < k; ++i)
    out[i] = lut[q[i]] * std::fabs(scale_value(f, s, i / block_of(f)));
}

// Rows with magnitudes over three decades; elements uniform in (-1, 1) times the row's magnitude,
// from a counter-based hash (fast enough for the 16B shape's 369M weights).
std::vector<float> random_rows(int64_t rows, int64_t k, uint32_t seed, float scale) {
  auto hash = [seed](uint64_t i) {
    uint64_t z = i * 0x9E3779B97F4A7C15ull + seed * 0xD1B54A32D192ED03ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  auto unit = [&](uint64_t i) {
    return float(int64_t(hash(i) >> 40) - (1 << 23)) / float(1 << 23);
  };
  std::vector<float> x(static_cast<size_t>(rows * k));
  for (int64_t r = 0; r < rows; ++r) {
    const float mag = scale * std::pow(10.0f, 1.5f * unit(~uint64_t(r)) - 0.5f);
    for (int64_t i = 0; i < k; ++i) x[r * k + i] = unit(uint64_t(r * k + i)) * mag;
  }
  return x;
}

template <class T>
DevMem upload(const std::vector<T>& h) {
  DevMem d(std::max<size_t>(h.size() * sizeof(T), 16));
  d.upload(h.data(), h.size() * sizeof(T));
  return d;
}

template <class T>
std::vector<T> download(const DevMem& d, size_t count) {
  std::vector<T> h(count);
  d.download(h.data(), count * sizeof(T));
  return h;
}

// Waits for the work queued so far, as cudaDeviceSynchronize, but gives up after kHangSeconds: a
// kernel that never ends (a tier waiting on a barrier nobody arrives at) then fails the run with
// what it was doing, instead of holding the GPU until CTest's timeout kills it.
constexpr int kHangSeconds = 120;
std::string g_doing = "start";

void sync() {
  cudaEvent_t done;
  cuda_ok(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), "cudaEventCreate");
  cuda_ok(cudaEventRecord(done, 0), "cudaEventRecord");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kHangSeconds);
  cudaError_t st;
  while ((st = cudaEventQuery(done)) == cudaErrorNotReady) {
    if (std::chrono::steady_clock::now() > deadline) {
      std::printf("FAIL %s: the GPU has not finished after %d s (a hung kernel)\n", g_doing.c_str(),
                  kHangSeconds);
      std::printf("gemm_test: failed (hang)\n");
      std::fflush(stdout);
      std::_Exit(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  cudaEventDestroy(done);
  cuda_ok(st, "cudaEventQuery");
  cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
}

void expect_same_bytes(const std::vector<uint8_t>& gpu, const std::vector<uint8_t>& cpu,
                       const std::string& what) {
  size_t diff = 0, first = 0;
  for (size_t i = 0; i < cpu.size(); ++i)
    if (gpu[i] != cpu[i] && diff++ == 0) first = i;
  expect(diff == 0, what + ": " + std::to_string(diff) +
                        " bytes differ from the CPU path (first at " + std::to_string(first) + ")");
}

// Tiers to run: the portable one, and the Hopper one where this build has it.
bool set_tier(const char* tier) { return setenv("NEP_GEMM_TIER", tier, 1) == 0; }

struct MCase {
  std::string name;
  int64_t n, k;
  std::vector<int64_t> offsets;  // [G + 1]; rows = offsets.back() + tail
  int64_t tail;                  // rows after the last group (must stay poisoned)
  bool transposed_weights;       // dX = dY W: weights made as [G, k, n], quantised transposed
  bool sampled;                  // check sampled rows only
  float scale = 1.0f;            // magnitude of the inputs (tiny: scales far below 2^-126)
};

// The inputs the quantiser cases plant among random values: both infinities, both NaN signs, the
// largest finite range, a negative subnormal and both zeros (a row of kSpecials[2 + (i & 1)] is
// NaN only).
const float kSpecials[] = {std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(),
                           -std::numeric_limits<float>::quiet_NaN(),
                           3.0e38f,
                           -1.0e-42f,
                           0.0f,
                           -0.0f};

// Non-finite and extreme inputs through the three quantisers (rows, weights, token-transposed
// rows): the GPU's bytes must equal the CPU's, whose rules are the wire codec's (the amax is the
// largest finite |x|; +-Inf and NaN of either sign become the e4m3 NaN code with the input's sign).
// The GPU's own NaN arithmetic drops the sign, so a negative NaN is the case that shows it.
void run_nonfinite_quantiser_case(int32_t f) {
  const int64_t m = 130, k = 160, groups = 2, wn = 128;
  const std::string name = std::string(format_name(f)) + " non-finite quantisers";
  g_doing = name;
  auto x = random_rows(m, k, 91u, 1.0f);
  for (int64_t i = 0; i < m * k; i += 37) x[i] = kSpecials[(i / 37) % 8];
  for (int64_t i = 0; i < k; ++i) x[5 * k + i] = kSpecials[2 + (i & 1)];  // a row of NaN only
  const std::vector<float>& w = x;  // weights [G = 2, wn / 2, k]: x's first wn rows
  const std::vector<int64_t> offsets = {0, 57, m};
  const int64_t sab = nep_gemm_row_scale_bytes(f, k);
  const int64_t sbb = nep_gemm_weight_scale_bytes(f, groups, wn / 2, k, 0);
  std::vector<uint8_t> qa(m * k), sa(m * sab), qb(wn * k), sb(sbb);
  Err e;
  nep_ok(nep_gemm_quantize_rows(f, (int64_t)x.data(), m, k, (int64_t)qa.data(), (int64_t)sa.data(),
                                e.msg, sizeof e.msg),
         e, "nep_gemm_quantize_rows");
  nep_ok(nep_gemm_quantize_weights(f, (int64_t)w.data(), groups, wn / 2, k, 0, (int64_t)qb.data(),
                                   (int64_t)sb.data(), e.msg, sizeof e.msg),
         e, "nep_gemm_quantize_weights");
  int64_t mp = 0;
  std::vector<int64_t> padded(groups + 1);
  nep_ok(nep_gemm_padded_rows(groups, offsets.data(), &mp, padded.data(), e.msg, sizeof e.msg), e,
         "padded rows");
  const int64_t blk = block_of(f), ss = f == NEP_GEMM_MXFP8 ? 1 : 4;
  std::vector<uint8_t> qt(k * mp), st(k * mp / blk * ss);
  nep_ok(
      nep_gemm_quantize_rows_t_grouped(f, (int64_t)x.data(), m, k, groups, offsets.data(),
                                       (int64_t)qt.data(), (int64_t)st.data(), e.msg, sizeof e.msg),
      e, "nep_gemm_quantize_rows_t_grouped");
  DevMem dx = upload(x);
  DevMem dqa(qa.size() + 16), dsa(sa.size() + 16), dqb(qb.size() + 16), dsb(sb.size() + 16);
  DevMem dqt(qt.size() + 16), dst(st.size() + 16);
  nep_ok(nep_cuda_gemm_quantize_rows(0, f, dx.addr(), m, k, dqa.addr(), dsa.addr(), 0, e.msg,
                                     sizeof e.msg),
         e, "nep_cuda_gemm_quantize_rows");
  nep_ok(nep_cuda_gemm_quantize_weights(0, f, dx.addr(), groups, wn / 2, k, 0, dqb.addr(),
                                        dsb.addr(), 0, e.msg, sizeof e.msg),
         e, "nep_cuda_gemm_quantize_weights");
  nep_ok(nep_cuda_gemm_quantize_rows_t_grouped(0, f, dx.addr(), m, k, groups, offsets.data(),
                                               dqt.addr(), dst.addr(), 0, e.msg, sizeof e.msg),
         e, "nep_cuda_gemm_quantize_rows_t_grouped");
  sync();
  const int before = g_fail;
  expect_same_bytes(download<uint8_t>(dqa, qa.size()), qa, name + ": quantize_rows elements");
  expect_same_bytes(download<uint8_t>(dsa, sa.size()), sa, name + ": quantize_rows scales");
  expect_same_bytes(download<uint8_t>(dqb, qb.size()), qb, name + ": quantize_weights elements");
  expect_same_bytes(download<uint8_t>(dsb, sb.size()), sb, name + ": quantize_weights scales");
  expect_same_bytes(download<uint8_t>(dqt, qt.size()), qt, name + ": rows_t_grouped elements");
  expect_same_bytes(download<uint8_t>(dst, st.size()), st, name + ": rows_t_grouped scales");
  std::printf("%s %s: rows, weights and token-transposed rows byte-equal to the CPU's\n",
              g_fail == before ? "ok  " : "FAIL", name.c_str());
}

// The weight quantisers in both orientations, and the row quantiser on the same G * n rows, on
// shapes on and off the 128 and 32 boundaries (n or k not multiples of 4 take the unvectorised
// kernels), with non-finite, subnormal and extreme elements; `misaligned` reads w 4 bytes and
// writes q 1 byte past an allocation's start (no float4 loads, no word stores). The GPU's bytes
// must equal the CPU's, and the bytes around q and s must keep their poison.
void run_weight_quantiser_case(int32_t f, int64_t groups, int64_t n, int64_t k, bool misaligned) {
  const std::string name = std::string(format_name(f)) + " weight quantisers [" +
                           std::to_string(groups) + ", " + std::to_string(n) + ", " +
                           std::to_string(k) + "]" + (misaligned ? " misaligned" : "");
  g_doing = name;
  const int64_t rows = groups * n, size = rows * k;
  auto w = random_rows(rows, k, 7u + uint32_t(131 * n + k), 0.05f);
  for (int64_t i = 0; i < size; i += 37) w[i] = kSpecials[(i / 37) % 8];
  if (rows > 1)  // a row of NaN only
    for (int64_t i = 0; i < k; ++i) w[k + i] = kSpecials[2 + (i & 1)];
  if (rows > 2)  // a row of subnormals only
    for (int64_t i = 0; i < k; ++i) w[2 * k + i] = (i & 1 ? -1.0e-42f : 3.0e-41f);
  const int64_t lead = misaligned ? 1 : 0;  // floats before w, bytes before q
  std::vector<float> padded_w(lead + size, 0.0f);
  std::copy(w.begin(), w.end(), padded_w.begin() + lead);
  DevMem dw = upload(padded_w);
  const int64_t dw_at = dw.addr() + 4 * lead;
  Err e;
  const int before = g_fail;
  auto check = [&](const DevMem& dq, const DevMem& ds, const std::vector<uint8_t>& q,
                   const std::vector<uint8_t>& sc, const std::string& what) {
    const auto gq = download<uint8_t>(dq, dq.bytes()), gs = download<uint8_t>(ds, ds.bytes());
    expect_same_bytes(std::vector<uint8_t>(gq.begin() + lead, gq.begin() + lead + size), q,
                      name + ": " + what + " elements");
    expect_same_bytes(std::vector<uint8_t>(gs.begin(), gs.begin() + sc.size()), sc,
                      name + ": " + what + " scales");
    bool kept = lead == 0 || gq[0] == 0x5A;
    for (size_t i = lead + size; i < gq.size(); ++i) kept = kept && gq[i] == 0x5A;
    for (size_t i = sc.size(); i < gs.size(); ++i) kept = kept && gs[i] == 0x5A;
    expect(kept, name + ": " + what + " wrote outside q or s");
  };
  {
    const int64_t sab = nep_gemm_row_scale_bytes(f, k);
    std::vector<uint8_t> q(size), sc(rows * sab);
    nep_ok(nep_gemm_quantize_rows(f, (int64_t)w.data(), rows, k, (int64_t)q.data(),
                                  (int64_t)sc.data(), e.msg, sizeof e.msg),
           e, "nep_gemm_quantize_rows");
    DevMem dq(lead + size + 16), ds(sc.size() + 16);
    dq.poison(0x5A);
    ds.poison(0x5A);
    nep_ok(nep_cuda_gemm_quantize_rows(0, f, dw_at, rows, k, dq.addr() + lead, ds.addr(), 0, e.msg,
                                       sizeof e.msg),
           e, "nep_cuda_gemm_quantize_rows");
    sync();
    check(dq, ds, q, sc, "quantize_rows");
  }
  for (int32_t t : {0, 1}) {
    const int64_t sbb = nep_gemm_weight_scale_bytes(f, groups, n, k, t);
    std::vector<uint8_t> q(size), sc(sbb);
    nep_ok(nep_gemm_quantize_weights(f, (int64_t)w.data(), groups, n, k, t, (int64_t)q.data(),
                                     (int64_t)sc.data(), e.msg, sizeof e.msg),
           e, "nep_gemm_quantize_weights");
    DevMem dq(lead + size + 16), ds(sc.size() + 16);
    dq.poison(0x5A);
    ds.poison(0x5A);
    nep_ok(nep_cuda_gemm_quantize_weights(0, f, dw_at, groups, n, k, t, dq.addr() + lead, ds.addr(),
                                          0, e.msg, sizeof e.msg),
           e, "nep_cuda_gemm_quantize_weights");
    sync();
    check(dq, ds, q, sc, t ? "quantize_weights transposed" : "quantize_weights");
  }
  std::printf("%s %s: rows and weights (plain, transposed) byte-equal to the CPU's\n",
              g_fail == before ? "ok  " : "FAIL", name.c_str());
}

// The M-grouped GEMM: GPU quantisers against the CPU's bytes, then the GEMM of each tier against
// the CPU GEMM on the same bytes.
void run_m_case(int32_t f, const MCase& c, const char* tier) {
  const int32_t groups = int32_t(c.offsets.size() - 1);
  const int64_t m = c.offsets.back() + c.tail, n = c.n, k = c.k;
  const std::string name = std::string(format_name(f)) + " " + c.name;
  g_doing = name + " quantisers";
  const auto x = random_rows(m, k, 17u + uint32_t(k), c.scale);
  const auto w =
      random_rows(groups * n, k, 29u + uint32_t(n), 0.05f * c.scale);  // [G, n, k] (or [G, k, n])
  const int64_t sab = nep_gemm_row_scale_bytes(f, k);
  const int64_t sbb = nep_gemm_weight_scale_bytes(f, groups, n, k, 0);
  std::vector<uint8_t> qa(m * k), sa(m * sab), qb(groups * n * k), sb(sbb);
  Err e;
  nep_ok(nep_gemm_quantize_rows(f, (int64_t)x.data(), m, k, (int64_t)qa.data(), (int64_t)sa.data(),
                                e.msg, sizeof e.msg),
         e, "nep_gemm_quantize_rows");
  // Weights: [G, n, k] directly, or [G, k, n] transposed into [G, n, k].
  const int64_t wn = c.transposed_weights ? k : n, wk = c.transposed_weights ? n : k;
  nep_ok(
      nep_gemm_quantize_weights(f, (int64_t)w.data(), groups, wn, wk, c.transposed_weights ? 1 : 0,
                                (int64_t)qb.data(), (int64_t)sb.data(), e.msg, sizeof e.msg),
      e, "nep_gemm_quantize_weights");
  DevMem dx = upload(x), dw = upload(w);
  DevMem dqa(qa.size() + 16), dsa(sa.size() + 16), dqb(qb.size() + 16), dsb(sb.size() + 16);
  nep_ok(nep_cuda_gemm_quantize_rows(0, f, dx.addr(), m, k, dqa.addr(), dsa.addr(), 0, e.msg,
                                     sizeof e.msg),
         e, "nep_cuda_gemm_quantize_rows");
  nep_ok(
      nep_cuda_gemm_quantize_weights(0, f, dw.addr(), groups, wn, wk, c.transposed_weights ? 1 : 0,
                                     dqb.addr(), dsb.addr(), 0, e.msg, sizeof e.msg),
      e, "nep_cuda_gemm_quantize_weights");
  sync();
  expect_same_bytes(download<uint8_t>(dqa, qa.size()), qa, name + ": quantize_rows elements");
  expect_same_bytes(download<uint8_t>(dsa, sa.size()), sa, name + ": quantize_rows scales");
  expect_same_bytes(download<uint8_t>(dqb, qb.size()), qb, name + ": quantize_weights elements");
  expect_same_bytes(download<uint8_t>(dsb, sb.size()), sb, name + ": quantize_weights scales");
  // The GEMM reads the CPU's bytes (equal or not, the GEMMs are compared on the same inputs).
  dqa.upload(qa.data(), qa.size());
  dsa.upload(sa.data(), sa.size());
  dqb.upload(qb.data(), qb.size());
  dsb.upload(sb.data(), sb.size());

  // Rows the check covers, and the CPU GEMM on exactly those rows (a compact sub-problem).
  std::vector<int64_t> rows, sub_offsets = {0};
  for (int32_t g = 0; g < groups; ++g) {
    const int64_t r0 = c.offsets[g], r1 = c.offsets[g + 1];
    if (!c.sampled) {
      for (int64_t r = r0; r < r1; ++r) rows.push_back(r);
    } else if (r1 > r0) {
      for (int64_t r : {r0, (r0 + r1) / 2, r1 - 1})
        if (rows.empty() || rows.back() != r) rows.push_back(r);
    }
    sub_offsets.push_back((int64_t)rows.size());
  }
  const int64_t ms = (int64_t)rows.size();
  std::vector<uint8_t> qa_s(std::max<int64_t>(ms, 1) * k), sa_s(std::max<int64_t>(ms, 1) * sab);
  for (int64_t i = 0; i < ms; ++i) {
    std::memcpy(&qa_s[i * k], &qa[rows[i] * k], k);
    std::memcpy(&sa_s[i * sab], &sa[rows[i] * sab], sab);
  }
  std::vector<float> cpu(std::max<int64_t>(ms, 1) * n);
  nep_ok(nep_gemm_grouped_m(f, groups, n, k, ms, sub_offsets.data(), (int64_t)qa_s.data(), 0,
                            (int64_t)sa_s.data(), 0, (int64_t)qb.data(), (int64_t)sb.data(),
                            (int64_t)cpu.data(), NEP_GEMM_OUT_FP32, e.msg, sizeof e.msg),
         e, "nep_gemm_grouped_m");

  // S of each checked output, sum over k of |a b| (dequantised), once for every tier and dtype.
  std::vector<double> sabs(std::max<int64_t>(ms, 1) * n, 0.0);
  {
    const int64_t nkb = (k + 127) / 128, nmx = (k + 31) / 32, sbg = sbb / groups;
    std::vector<double> db(k);
    for (int32_t g = 0; g < groups; ++g) {
      std::vector<int64_t> mine;
      for (int64_t i = 0; i < ms; ++i)
        if (rows[i] >= c.offsets[g] && rows[i] < c.offsets[g + 1]) mine.push_back(i);
      if (mine.empty()) continue;
      std::vector<std::vector<double>> da(mine.size(), std::vector<double>(k));
      for (size_t x = 0; x < mine.size(); ++x)
        abs_row(f, &qa[rows[mine[x]] * k], &sa[rows[mine[x]] * sab], k, da[x].data());
      for (int64_t j = 0; j < n; ++j) {
        const uint8_t* qbj = &qb[(g * n + j) * k];
        if (f == NEP_GEMM_FP8_BLOCK) {
          for (int64_t kk = 0; kk < k; ++kk)
            db[kk] = abs_e4m3()[qbj[kk]] *
                     std::fabs(scale_value(f, &sb[g * sbg], (j / 128) * nkb + kk / 128));
        } else {
          abs_row(f, qbj, &sb[g * sbg + j * nmx], k, db.data());
        }
        for (size_t x = 0; x < mine.size(); ++x) {
          double acc = 0;
          for (int64_t kk = 0; kk < k; ++kk) acc += da[x][kk] * db[kk];
          sabs[mine[x] * n + j] = acc;
        }
      }
    }
  }

  {
    set_tier(tier);
    for (int32_t dtype : {NEP_GEMM_OUT_FP32, NEP_GEMM_OUT_BF16}) {
      g_doing = name + " tier " + tier + " grouped_m";
      const int64_t esize = dtype == NEP_GEMM_OUT_FP32 ? 4 : 2;
      DevMem dc(m * n * esize + 16);
      dc.poison(0xFF);
      const int32_t st = nep_cuda_gemm_grouped_m(
          0, f, groups, n, k, m, c.offsets.data(), dqa.addr(), 0, dsa.addr(), 0, dqb.addr(),
          dsb.addr(), dc.addr(), dtype, 0, e.msg, sizeof e.msg);
      if (st == NEP_ERR_UNSUPPORTED && std::strcmp(tier, "wgmma") == 0) {
        std::printf("skip %s: tier wgmma: %s\n", name.c_str(), e.msg);
        break;
      }
      nep_ok(st, e, "nep_cuda_gemm_grouped_m");
      sync();
      const auto raw = download<uint8_t>(dc, m * n * esize);
      // Poison outside the groups.
      int64_t written_outside = 0;
      for (int64_t r = 0; r < m; ++r) {
        if (r >= c.offsets[0] && r < c.offsets.back()) continue;
        for (int64_t j = 0; j < n * esize; ++j) written_outside += raw[r * n * esize + j] != 0xFF;
      }
      expect(written_outside == 0, name + " tier " + tier + ": " + std::to_string(written_outside) +
                                       " bytes written outside the groups");
      double worst = 0;
      int64_t bad = 0, bad_loose = 0;
      for (int64_t i = 0; i < ms; ++i) {
        const int64_t r = rows[i];
        int32_t g = 0;
        while (!(r >= c.offsets[g] && r < c.offsets[g + 1])) ++g;
        for (int64_t j = 0; j < n; ++j) {
          const double s = sabs[i * n + j];
          double got;
          if (dtype == NEP_GEMM_OUT_FP32) {
            float v;
            std::memcpy(&v, &raw[(r * n + j) * 4], 4);
            got = v;
          } else {
            uint16_t h;
            std::memcpy(&h, &raw[(r * n + j) * 2], 2);
            uint32_t u = uint32_t(h) << 16;
            float v;
            std::memcpy(&v, &u, 4);
            got = v;
          }
          const double want = cpu[i * n + j];
          // bf16: half an ulp relative, and below 2^-126 half of bf16's subnormal step 2^-133.
          const double bound = std::ldexp(s, -10) +
                               (dtype == NEP_GEMM_OUT_BF16 ? std::fabs(want) / 128 + 0x1p-134 : 0) +
                               kSubnormalSlack;
          const double d = std::fabs(got - want);
          if (!(d <= bound)) ++bad;
          if (s > 0) worst = std::max(worst, d / s);
          if (!c.sampled) {  // loose: against float32 of the unquantised inputs
            double ref = 0, sf = 0;
            for (int64_t kk = 0; kk < k; ++kk) {
              const double wv =
                  c.transposed_weights ? w[(g * k + kk) * n + j] : w[(g * n + j) * k + kk];
              ref += double(x[r * k + kk]) * wv;
              sf += std::fabs(double(x[r * k + kk]) * wv);
            }
            const double loose =
                (f == NEP_GEMM_FP8_BLOCK ? 0.14 : 0.25) * sf + std::fabs(ref) / 128 + 1e-7;
            if (!(std::fabs(got - ref) <= loose)) ++bad_loose;
          }
        }
      }
      expect(bad_loose == 0,
             name + " tier " + tier + ": " + std::to_string(bad_loose) +
                 " outputs outside the loose bound against float32 of the unquantised inputs");
      expect(bad == 0, name + " tier " + tier + (dtype == NEP_GEMM_OUT_FP32 ? " fp32" : " bf16") +
                           ": " + std::to_string(bad) +
                           " outputs outside the bound against the CPU path");
      std::printf("%s %s tier %s %s: %lld rows checked, largest |gpu - cpu| / S = %.3g\n",
                  bad == 0 ? "ok  " : "FAIL", name.c_str(), tier,
                  dtype == NEP_GEMM_OUT_FP32 ? "fp32" : "bf16", (long long)ms, worst);
    }
  }
  set_tier("auto");
}

struct KCase {
  std::string name;
  int64_t n, k;
  std::vector<int64_t> offsets;
  std::vector<int32_t> check_groups;  // empty: all
};

void run_k_case(int32_t f, const KCase& c, const char* tier) {
  const int32_t groups = int32_t(c.offsets.size() - 1);
  const int64_t m = c.offsets.back() + 3, n = c.n, k = c.k, blk = block_of(f),
                ss = f == NEP_GEMM_FP8_BLOCK ? 4 : 1;
  const std::string name = std::string(format_name(f)) + " " + c.name;
  g_doing = name + " quantisers";
  const auto dy = random_rows(m, n, 41u + uint32_t(n), 1.0f),
             x = random_rows(m, k, 43u + uint32_t(k), 1.0f);
  Err e;
  int64_t mp = 0;
  std::vector<int64_t> padded(groups + 1);
  nep_ok(nep_gemm_padded_rows(groups, c.offsets.data(), &mp, padded.data(), e.msg, sizeof e.msg), e,
         "padded rows");
  std::vector<uint8_t> qa(n * mp), sa(n * mp / blk * ss), qb(k * mp), sb(k * mp / blk * ss);
  nep_ok(
      nep_gemm_quantize_rows_t_grouped(f, (int64_t)dy.data(), m, n, groups, c.offsets.data(),
                                       (int64_t)qa.data(), (int64_t)sa.data(), e.msg, sizeof e.msg),
      e, "nep_gemm_quantize_rows_t_grouped dy");
  nep_ok(
      nep_gemm_quantize_rows_t_grouped(f, (int64_t)x.data(), m, k, groups, c.offsets.data(),
                                       (int64_t)qb.data(), (int64_t)sb.data(), e.msg, sizeof e.msg),
      e, "nep_gemm_quantize_rows_t_grouped x");
  DevMem ddy = upload(dy), dx = upload(x);
  DevMem dqa(qa.size() + 16), dsa(sa.size() + 16), dqb(qb.size() + 16), dsb(sb.size() + 16);
  nep_ok(nep_cuda_gemm_quantize_rows_t_grouped(0, f, ddy.addr(), m, n, groups, c.offsets.data(),
                                               dqa.addr(), dsa.addr(), 0, e.msg, sizeof e.msg),
         e, "nep_cuda_gemm_quantize_rows_t_grouped dy");
  nep_ok(nep_cuda_gemm_quantize_rows_t_grouped(0, f, dx.addr(), m, k, groups, c.offsets.data(),
                                               dqb.addr(), dsb.addr(), 0, e.msg, sizeof e.msg),
         e, "nep_cuda_gemm_quantize_rows_t_grouped x");
  sync();
  expect_same_bytes(download<uint8_t>(dqa, qa.size()), qa,
                    name + ": quantize_rows_t_grouped elements");
  expect_same_bytes(download<uint8_t>(dsa, sa.size()), sa,
                    name + ": quantize_rows_t_grouped scales");
  expect_same_bytes(download<uint8_t>(dqb, qb.size()), qb,
                    name + ": quantize_rows_t_grouped elements (x)");
  expect_same_bytes(download<uint8_t>(dsb, sb.size()), sb,
                    name + ": quantize_rows_t_grouped scales (x)");
  dqa.upload(qa.data(), qa.size());
  dsa.upload(sa.data(), sa.size());
  dqb.upload(qb.data(), qb.size());
  dsb.upload(sb.data(), sb.size());
  std::vector<int32_t> checked = c.check_groups;
  if (checked.empty())
    for (int32_t g = 0; g < groups; ++g) checked.push_back(g);
  // The CPU path on each checked group alone (its padded columns copied into a one-group problem).
  std::vector<std::vector<float>> cpu(groups);
  std::vector<std::vector<double>> sabs(groups);
  for (int32_t g : checked) {
    const int64_t len = padded[g + 1] - padded[g], rows = c.offsets[g + 1] - c.offsets[g];
    const int64_t one[] = {0, rows};
    std::vector<uint8_t> ga(std::max<int64_t>(n * len, 1)),
        gsa(std::max<int64_t>(n * len / blk * ss, 4));
    std::vector<uint8_t> gb(std::max<int64_t>(k * len, 1)),
        gsb(std::max<int64_t>(k * len / blk * ss, 4));
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(&ga[i * len], &qa[i * mp + padded[g]], len);
      std::memcpy(&gsa[i * len / blk * ss], &sa[(i * mp + padded[g]) / blk * ss], len / blk * ss);
    }
    for (int64_t j = 0; j < k; ++j) {
      std::memcpy(&gb[j * len], &qb[j * mp + padded[g]], len);
      std::memcpy(&gsb[j * len / blk * ss], &sb[(j * mp + padded[g]) / blk * ss], len / blk * ss);
    }
    cpu[g].resize(n * k);
    nep_ok(nep_gemm_grouped_k(f, 1, n, k, one, (int64_t)ga.data(), (int64_t)gsa.data(),
                              (int64_t)gb.data(), (int64_t)gsb.data(), (int64_t)cpu[g].data(),
                              e.msg, sizeof e.msg),
           e, "nep_gemm_grouped_k");
    // S exactly where it is cheap, else its Cauchy-Schwarz bound ||a_i|| ||b_j|| (looser).
    sabs[g].assign(n * k, 0.0);
    std::vector<double> da(n * len), db(k * len), na(n), nb(k);
    for (int64_t i = 0; i < n; ++i)
      abs_row(f, ga.data() + i * len, gsa.data() + i * len / blk * ss, len, da.data() + i * len);
    for (int64_t j = 0; j < k; ++j)
      abs_row(f, gb.data() + j * len, gsb.data() + j * len / blk * ss, len, db.data() + j * len);
    const bool exact = n * k * len <= (int64_t(1) << 27);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t t = 0; t < len; ++t) na[i] += da[i * len + t] * da[i * len + t];
    for (int64_t j = 0; j < k; ++j)
      for (int64_t t = 0; t < len; ++t) nb[j] += db[j * len + t] * db[j * len + t];
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) {
        double v = 0;
        if (exact) {
          for (int64_t t = 0; t < len; ++t) v += da[i * len + t] * db[j * len + t];
        } else {
          v = std::sqrt(na[i] * nb[j]);
        }
        sabs[g][i * k + j] = v;
      }
  }
  {
    set_tier(tier);
    g_doing = name + " tier " + tier + " grouped_k";
    DevMem dc(groups * n * k * 4 + 16);
    dc.poison(0xFF);
    const int32_t st =
        nep_cuda_gemm_grouped_k(0, f, groups, n, k, c.offsets.data(), dqa.addr(), dsa.addr(),
                                dqb.addr(), dsb.addr(), dc.addr(), 0, e.msg, sizeof e.msg);
    if (st == NEP_ERR_UNSUPPORTED && std::strcmp(tier, "wgmma") == 0) {
      std::printf("skip %s: tier wgmma: %s\n", name.c_str(), e.msg);
      set_tier("auto");
      return;
    }
    nep_ok(st, e, "nep_cuda_gemm_grouped_k");
    sync();
    const auto got = download<float>(dc, groups * n * k);
    int64_t poisoned = 0, bad = 0;
    double worst = 0;
    for (float v : got) {
      uint32_t u;
      std::memcpy(&u, &v, 4);
      poisoned += u == 0xFFFFFFFFu;
    }
    for (int32_t g : checked)
      for (int64_t i = 0; i < n * k; ++i) {
        const double d = std::fabs(double(got[g * n * k + i]) - cpu[g][i]), s = sabs[g][i];
        if (!(d <= std::ldexp(s, -10) + kSubnormalSlack)) ++bad;
        if (s > 0) worst = std::max(worst, d / s);
      }
    expect(poisoned == 0,
           name + " tier " + tier + ": " + std::to_string(poisoned) + " outputs left unwritten");
    expect(bad == 0,
           name + " tier " + tier + ": " + std::to_string(bad) + " outputs outside the bound");
    std::printf("%s %s tier %s: %zu groups checked, largest |gpu - cpu| / S = %.3g\n",
                bad == 0 && poisoned == 0 ? "ok  " : "FAIL", name.c_str(), tier, checked.size(),
                worst);
  }
  set_tier("auto");
}

// The fused SwiGLU quantiser: the GPU's h against the CPU's, and the GPU's bytes equal to the CPU
// row quantiser's on the GPU's h. The two exp may differ by 2 ulp (CUDA's expf is within 2 ulp,
// the CPU's within 1), which the division and the product carry into h with a rounding each: at
// most 8 ulp allowed.
void run_swiglu_case(int32_t f, int64_t m, int64_t inter) {
  const std::string name = std::string(format_name(f)) + " swiglu rows [" + std::to_string(m) +
                           ", " + std::to_string(inter) + "]";
  const auto y = random_rows(m, 2 * inter, 71u + uint32_t(inter), 2.0f);
  const int64_t sb = nep_gemm_row_scale_bytes(f, inter);
  std::vector<float> h_cpu(m * inter);
  std::vector<uint8_t> q(m * inter), s(m * sb);
  Err e;
  nep_ok(nep_gemm_swiglu_quantize_rows(f, (int64_t)y.data(), m, inter, (int64_t)h_cpu.data(),
                                       (int64_t)q.data(), (int64_t)s.data(), e.msg, sizeof e.msg),
         e, "nep_gemm_swiglu_quantize_rows");
  DevMem dy = upload(y), dh(m * inter * 4), dq(m * inter + 16), ds(m * sb + 16);
  g_doing = name;
  nep_ok(nep_cuda_gemm_swiglu_quantize_rows(0, f, dy.addr(), m, inter, dh.addr(), dq.addr(),
                                            ds.addr(), 0, e.msg, sizeof e.msg),
         e, "nep_cuda_gemm_swiglu_quantize_rows");
  sync();
  const auto h_gpu = download<float>(dh, m * inter);
  int64_t worst = 0;
  for (int64_t i = 0; i < m * inter; ++i) {
    int32_t a, b;
    std::memcpy(&a, &h_gpu[i], 4);
    std::memcpy(&b, &h_cpu[i], 4);
    worst = std::max<int64_t>(worst, std::llabs(int64_t(a) - int64_t(b)));
  }
  expect(worst <= 8, name + ": h differs from the CPU's by " + std::to_string(worst) + " ulp");
  std::vector<uint8_t> q_of_h(m * inter), s_of_h(m * sb);
  nep_ok(nep_gemm_quantize_rows(f, (int64_t)h_gpu.data(), m, inter, (int64_t)q_of_h.data(),
                                (int64_t)s_of_h.data(), e.msg, sizeof e.msg),
         e, "nep_gemm_quantize_rows");
  expect_same_bytes(download<uint8_t>(dq, q.size()), q_of_h, name + ": elements");
  expect_same_bytes(download<uint8_t>(ds, s.size()), s_of_h, name + ": scales");
  std::printf("%s %s: h within %lld ulp of the CPU's\n", worst <= 8 ? "ok  " : "FAIL", name.c_str(),
              (long long)worst);
}

// The fused SwiGLU backward quantiser: the GPU's dy against the CPU's, and the GPU's bytes equal to
// the CPU row quantiser's on the GPU's dy. The two exp differ in the last bits; dgate =
// (dh u) sig (1 + g (1 - sig)) cancels near g = -1.28, so its difference is bounded by 2^-16 of
// its terms' magnitude |dh u| sig (1 + |g| (1 - sig)), not of dgate itself (over the 16B shape's
// 34M values some gates land close enough to the root for a relative bound to fail); dup = dh silu
// has no cancellation and keeps 2^-16 of its own magnitude.
void run_dswiglu_case(int32_t f, int64_t m, int64_t inter) {
  const std::string name = std::string(format_name(f)) + " dswiglu rows [" + std::to_string(m) +
                           ", " + std::to_string(2 * inter) + "]";
  const auto y = random_rows(m, 2 * inter, 91u + uint32_t(inter), 2.0f);
  const auto dh = random_rows(m, inter, 93u + uint32_t(inter), 1.0f);
  const int64_t k = 2 * inter, sb = nep_gemm_row_scale_bytes(f, k);
  std::vector<float> dy_cpu(m * k);
  std::vector<uint8_t> q(m * k), s(m * sb);
  Err e;
  nep_ok(nep_gemm_dswiglu_quantize_rows(f, (int64_t)y.data(), (int64_t)dh.data(), m, inter,
                                        (int64_t)dy_cpu.data(), (int64_t)q.data(),
                                        (int64_t)s.data(), e.msg, sizeof e.msg),
         e, "nep_gemm_dswiglu_quantize_rows");
  DevMem dy_d = upload(y), dh_d = upload(dh), out(m * k * 4), dq(m * k + 16), ds(m * sb + 16);
  g_doing = name;
  nep_ok(nep_cuda_gemm_dswiglu_quantize_rows(0, f, dy_d.addr(), dh_d.addr(), m, inter, out.addr(),
                                             dq.addr(), ds.addr(), 0, e.msg, sizeof e.msg),
         e, "nep_cuda_gemm_dswiglu_quantize_rows");
  sync();
  const auto dy_gpu = download<float>(out, m * k);
  int64_t bad = 0;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = i < inter ? i : i - inter;
      const double g = y[r * k + j], u = y[r * k + inter + j], d = dh[r * inter + j];
      const double sig = 1.0 / (1.0 + std::exp(-g));
      const double mag = i < inter ? std::fabs(d * u) * sig * (1.0 + std::fabs(g) * (1.0 - sig))
                                   : std::fabs(d * g * sig);
      const double got = dy_gpu[r * k + i], want = dy_cpu[r * k + i];
      if (!(std::fabs(got - want) <= std::ldexp(std::max(mag, std::fabs(want)), -16) + 1e-30))
        ++bad;
    }
  expect(bad == 0, name + ": " + std::to_string(bad) +
                       " values of dy outside 2^-16 of their terms' magnitude from the CPU's");
  std::vector<uint8_t> q_of(m * k), s_of(m * sb);
  nep_ok(nep_gemm_quantize_rows(f, (int64_t)dy_gpu.data(), m, k, (int64_t)q_of.data(),
                                (int64_t)s_of.data(), e.msg, sizeof e.msg),
         e, "nep_gemm_quantize_rows");
  expect_same_bytes(download<uint8_t>(dq, q.size()), q_of, name + ": elements");
  expect_same_bytes(download<uint8_t>(ds, s.size()), s_of, name + ": scales");
  std::printf("%s %s\n", bad == 0 ? "ok  " : "FAIL", name.c_str());
}

void expect_refused(int32_t st, int32_t want, const Err& e, const char* needle, const char* what) {
  const bool ok = st == want && std::strstr(e.msg, needle) != nullptr;
  expect(ok, std::string(what) + ": status " + std::to_string(st) + ", message '" + e.msg +
                 "' (wanted '" + needle + "')");
  if (ok) std::printf("ok   refused %s: %s\n", what, e.msg);
}

void bad_arguments() {
  DevMem a(4096), s(4096), c(4096);
  std::vector<uint8_t> host(4096);
  const int64_t off[] = {0, 8, 16};
  Err e;
  expect_refused(
      nep_cuda_gemm_grouped_m(-1, NEP_GEMM_MXFP8, 2, 8, 64, 16, off, a.addr(), 0, s.addr(), 0,
                              a.addr(), s.addr(), c.addr(), 0, 0, e.msg, sizeof e.msg),
      NEP_ERR_INVALID_ARGUMENT, e, "device=-1", "device -1");
  expect_refused(nep_cuda_gemm_grouped_m(0, 7, 2, 8, 64, 16, off, a.addr(), 0, s.addr(), 0,
                                         a.addr(), s.addr(), c.addr(), 0, 0, e.msg, sizeof e.msg),
                 NEP_ERR_INVALID_ARGUMENT, e, "format=7", "format 7");
  // C needs 16 rows x 65536 fp32 = 4 MiB, far past c's 4 KiB (and past any rounding of the
  // allocation); a, sa fit, and c is checked before b.
  expect_refused(
      nep_cuda_gemm_grouped_m(0, NEP_GEMM_MXFP8, 2, 65536, 64, 16, off, a.addr(), 0, s.addr(), 0,
                              a.addr(), s.addr(), c.addr(), 0, 0, e.msg, sizeof e.msg),
      NEP_ERR_INVALID_ARGUMENT, e, "c=", "output past its allocation");
  expect_refused(
      nep_cuda_gemm_grouped_m(0, NEP_GEMM_MXFP8, 2, 8, 64, 16, off, (int64_t)host.data(), 0,
                              s.addr(), 0, a.addr(), s.addr(), c.addr(), 0, 0, e.msg, sizeof e.msg),
      NEP_ERR_INVALID_ARGUMENT, e, "a=", "host memory as a");
  expect_refused(
      nep_cuda_gemm_grouped_k(0, NEP_GEMM_FP8_BLOCK, 2, 8, 8, off, a.addr(), s.addr() + 2, a.addr(),
                              s.addr(), c.addr(), 0, e.msg, sizeof e.msg),
      NEP_ERR_INVALID_ARGUMENT, e, "sa=", "misaligned fp32 scales");
  set_tier("bogus");
  expect_refused(
      nep_cuda_gemm_grouped_m(0, NEP_GEMM_MXFP8, 2, 8, 64, 16, off, a.addr(), 0, s.addr(), 0,
                              a.addr(), s.addr(), c.addr(), 0, 0, e.msg, sizeof e.msg),
      NEP_ERR_INVALID_ARGUMENT, e, "NEP_GEMM_TIER=bogus", "unknown tier");
  set_tier("auto");
}

}  // namespace

int main(int argc, char** argv) {
  // Line by line, so what ran before a hang or a crash reaches CTest's log.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (!gpu_present("gemm_test")) return kSkipNoGpu;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--probe-gpu") == 0) return 0;
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
  }
  try {
    cuda_ok(cudaSetDevice(0), "cudaSetDevice");
    const auto split = uneven_split(k16bRows, k16bExperts);
    const auto off16b = offsets_of(split);
    std::vector<MCase> m_cases = {
        {"aligned", 128, 256, {0, 128, 256}, 0, false, false},
        {"odd shapes", 72, 200, {0, 5, 17, 37}, 3, false, false},
        {"empty experts, one token", 130, 96, {2, 2, 3, 3, 70, 70}, 5, false, false},
        {"hot expert, unaligned starts", 200, 304, {3, 4, 500, 510, 517}, 1, false, false},
        {"k below one block", 33, 17, {0, 20}, 0, false, false},
        {"tiny magnitudes (scale products below 2^-126)",
         40,
         96,
         {0, 9, 30},
         0,
         false,
         false,
         1e-20f},
        {"activation gradient (transposed weights)", 136, 272, {0, 1, 70, 200}, 0, true, false},
    };
    std::vector<KCase> k_cases = {
        {"weight gradient aligned", 64, 96, {0, 128, 256}, {}},
        {"weight gradient odd", 37, 70, {0, 5, 150, 151}, {}},
        {"weight gradient empty, one token, hot, unaligned", 20, 33, {2, 2, 3, 300, 300, 310}, {}},
    };
    if (!quick) {
      m_cases.push_back({"16B gate+up forward [24576, 2816] x 2048", 2 * k16bInter, k16bHidden,
                         off16b, 0, false, true});
      m_cases.push_back(
          {"16B down forward [24576, 2048] x 1408", k16bHidden, k16bInter, off16b, 0, false, true});
      m_cases.push_back({"16B down activation gradient [24576, 1408] x 2048", k16bInter, k16bHidden,
                         off16b, 0, true, true});
      k_cases.push_back(
          {"16B down weight gradient [64, 2048, 1408]", k16bHidden, k16bInter, off16b, {0, 1, 63}});
    }
    // The portable tier's cases and the quantisers first, the Hopper tier's after: a fault in one
    // tier (which ends every later CUDA call of the process) leaves the other's results printed.
    for (int32_t f : {NEP_GEMM_FP8_BLOCK, NEP_GEMM_MXFP8}) {
      for (const MCase& c : m_cases) run_m_case(f, c, "mma");
      for (const KCase& c : k_cases) run_k_case(f, c, "mma");
      run_swiglu_case(f, 37, 200);
      if (!quick) run_swiglu_case(f, k16bRows, k16bInter);
      run_dswiglu_case(f, 29, 200);
      if (!quick) run_dswiglu_case(f, k16bRows, k16bInter);
      run_nonfinite_quantiser_case(f);
      // Weight quantisers: aligned shapes, blocks cut at both edges, n or k not multiples of 4
      // (and of 32), one element, and unaligned addresses.
      for (const auto& wc : std::vector<std::vector<int64_t>>{{2, 256, 384, 0},
                                                              {2, 200, 136, 0},
                                                              {3, 37, 40, 0},
                                                              {2, 40, 37, 0},
                                                              {1, 1, 1, 0},
                                                              {2, 200, 136, 1},
                                                              {2, 37, 40, 1}})
        run_weight_quantiser_case(f, wc[0], wc[1], wc[2], wc[3] != 0);
    }
    bad_arguments();
    for (int32_t f : {NEP_GEMM_FP8_BLOCK, NEP_GEMM_MXFP8}) {
      for (const MCase& c : m_cases) run_m_case(f, c, "wgmma");
      for (const KCase& c : k_cases) run_k_case(f, c, "wgmma");
    }
  } catch (const std::exception& ex) {
    ++g_fail;
    std::printf("FAIL %s\n", ex.what());
  }
  std::printf("gemm_test: %s\n",
              g_fail == 0 ? "all passed" : (std::to_string(g_fail) + " failures").c_str());
  return g_fail == 0 ? 0 : 1;
}
