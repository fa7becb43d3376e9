// Regression tests for the two nep_ll_buffer_create findings of fuzz_args (inputs kept
// in fuzz/known/): hidden = 2^63 - 1 overflowed int64 while deriving the row size, and
// num_experts = 2^31 - 1 allocated gigabytes of per-expert tables before any limit applied. Both
// must now be refused with NEP_ERR_CAPACITY naming the argument, its value and the limit, without
// allocating, and the communicator must stay usable; the limits themselves are accepted.
#include <gtest/gtest.h>

#include <sys/resource.h>

#include <cstdint>
#include <limits>
#include <string>

#include "layout.h"
#include "ll_buffer.h"
#include "nativeep/c_api.h"

namespace {

// Peak resident set of this process so far, in bytes.
int64_t peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<int64_t>(u.ru_maxrss) * 1024;
}

struct LoopbackComm {
  nep_comm* comm = nullptr;
  char err[1024] = {0};
  LoopbackComm() { EXPECT_EQ(nep_comm_create_loopback(&comm, err, sizeof err), NEP_OK) << err; }
  ~LoopbackComm() { nep_comm_destroy(comm); }
  LoopbackComm(const LoopbackComm&) = delete;
  LoopbackComm& operator=(const LoopbackComm&) = delete;

  int32_t create(int64_t tokens, int64_t hidden, int32_t experts, int32_t topk, int32_t wire,
                 nep_ll_buffer** out) {
    err[0] = '\0';
    return nep_ll_buffer_create(comm, tokens, hidden, experts, topk, wire, 2000, out, err,
                                sizeof err);
  }
};

// The communicator still makes a working buffer after a refusal.
void expect_still_usable(LoopbackComm& c) {
  nep_ll_buffer* buf = nullptr;
  ASSERT_EQ(c.create(4, 64, 4, 2, NEP_WIRE_BF16, &buf), NEP_OK) << c.err;
  EXPECT_EQ(nep_ll_buffer_hidden(buf), 64);
  EXPECT_EQ(nep_ll_buffer_num_experts(buf), 4);
  nep_ll_buffer_destroy(buf);
}

}  // namespace

// fuzz/known/ll-hidden-int64-overflow.bin: hidden = INT64_MAX, and every value past the limit
// that would overflow 4 * hidden (fp32) or hidden + blocks (fp8, mxfp8), for every wire format.
TEST(LlLimits, HugeHiddenIsRefusedBeforeAnyRowSizeIsComputed) {
  LoopbackComm c;
  const int64_t huge[] = {
      std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::max() / 4 + 1,
      std::numeric_limits<int64_t>::max() / 8, int64_t{1} << 40, nep::kMaxLlHidden + 1};
  for (int32_t wire = NEP_WIRE_FP32; wire <= NEP_WIRE_MXFP8; ++wire) {
    for (int64_t h : huge) {
      // poisoned: must be reset to null
      nep_ll_buffer* buf = reinterpret_cast<nep_ll_buffer*>(0x1);
      EXPECT_EQ(c.create(1, h, 8, 2, wire, &buf), NEP_ERR_CAPACITY)
          << "wire " << wire << " hidden " << h << ": " << c.err;
      EXPECT_EQ(buf, nullptr);
      EXPECT_EQ(std::string(c.err), "hidden = " + std::to_string(h) + " exceeds the limit " +
                                        std::to_string(nep::kMaxLlHidden) +
                                        " of the low-latency buffer");
    }
  }
  // The limit itself is a valid size (its 64 MiB fp32 row fits the region easily).
  nep_ll_buffer* buf = nullptr;
  ASSERT_EQ(c.create(1, nep::kMaxLlHidden, 1, 1, NEP_WIRE_FP32, &buf), NEP_OK) << c.err;
  EXPECT_EQ(nep_ll_buffer_hidden(buf), nep::kMaxLlHidden);
  nep_ll_buffer_destroy(buf);
  expect_still_usable(c);
}

// fuzz/known/ll-num-experts-8gib.bin: num_experts = 2^31 - 1 on one rank sized the per-expert
// count table to 8 GiB. Now refused above the normal mode's limit, with no allocation (the peak
// resident set does not move by anything near the table that was allocated before).
TEST(LlLimits, HugeNumExpertsIsRefusedWithoutAllocating) {
  LoopbackComm c;
  const int64_t before = peak_rss_bytes();
  const int32_t huge[] = {std::numeric_limits<int32_t>::max(), nep::kMaxExperts + 1, 1 << 30};
  for (int32_t e : huge) {
    nep_ll_buffer* buf = reinterpret_cast<nep_ll_buffer*>(0x1);
    EXPECT_EQ(c.create(1, 8, e, 1, NEP_WIRE_FP32, &buf), NEP_ERR_CAPACITY)
        << "num_experts " << e << ": " << c.err;
    EXPECT_EQ(buf, nullptr);
    EXPECT_EQ(std::string(c.err), "num_experts = " + std::to_string(e) + " exceeds the limit " +
                                      std::to_string(nep::kMaxExperts) +
                                      " of the low-latency buffer");
  }
  const int64_t grew = peak_rss_bytes() - before;
  EXPECT_LT(grew, int64_t{256} << 20) << "peak RSS grew by " << grew << " bytes while refusing";
  // The limit is accepted (a 4 MiB count table and 4 MiB flag blocks).
  nep_ll_buffer* buf = nullptr;
  ASSERT_EQ(c.create(1, 8, nep::kMaxExperts, 1, NEP_WIRE_FP32, &buf), NEP_OK) << c.err;
  EXPECT_EQ(nep_ll_buffer_num_local_experts(buf), nep::kMaxExperts);
  nep_ll_buffer_destroy(buf);
  expect_still_usable(c);
}

// Products of individually valid sizes that leave int64 are refused too, naming the factors.
TEST(LlLimits, OverflowingProductsAreCapacityErrors) {
  LoopbackComm c;
  nep_ll_buffer* buf = nullptr;
  EXPECT_EQ(c.create(std::numeric_limits<int64_t>::max(), 8, 8, 2, NEP_WIRE_FP32, &buf),
            NEP_ERR_CAPACITY);
  EXPECT_EQ(std::string(c.err),
            "max_tokens_per_rank = " + std::to_string(std::numeric_limits<int64_t>::max()) +
                " times world_size = 1 exceeds the limit 2147483647 rows per local expert");
  EXPECT_EQ(c.create(std::numeric_limits<int32_t>::max(), nep::kMaxLlHidden, 1024, 1024,
                     NEP_WIRE_FP32, &buf),
            NEP_ERR_CAPACITY);
  EXPECT_NE(std::string(c.err).find("exceeds the limit of 17592186044416 bytes"), std::string::npos)
      << c.err;
  EXPECT_EQ(buf, nullptr);
  expect_still_usable(c);
}
