#include <gtest/gtest.h>

#include "nativeep/c_api.h"

TEST(Smoke, AbiVersion) { EXPECT_GE(nep_abi_version(), 1); }
