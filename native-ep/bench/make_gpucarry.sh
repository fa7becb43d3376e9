#!/usr/bin/env bash
# Assembles .gpucarry/ at the repository root: what a GPU-machine run needs beyond the working tree
# (the machine has no Java and nothing is built there). Name ".gpucarry" in the run's carry and start
# run_gpu.sh with NEP_BUILD=.gpucarry/gpu-build (about 45 MB; the carry limit is 64 MiB with the tree).
#
#   native-ep/bench/make_gpucarry.sh            # builds everything
#   NEP_SKIP_MVN=1 native-ep/bench/make_gpucarry.sh   # reuses native-ep/target/{classes,test-classes}
#
#   jre/          jlink-ed Java runtime (java.base, java.logging, jdk.unsupported)
#   jars/         javacpp 1.5.14 and its linux-x86_64 jar from ~/.m2
#   classes/, test-classes/   native-ep's classes, JNI libraries and the Java GPU driver
#   gpu-build/{bin,lib}       ep_test, ep_bench, ll_test, ll_bench and the CUDA plug-in (cmake, NEP_BUILD_CUDA=ON)
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.gpucarry/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpucarry/' >> .git/info/exclude; }
rm -rf .gpucarry && mkdir -p .gpucarry/jars .gpucarry/gpu-build
jlink --add-modules java.base,java.logging,jdk.unsupported --output .gpucarry/jre --strip-debug --no-header-files \
  --no-man-pages --compress=2
jcp=${HOME}/.m2/repository/org/bytedeco/javacpp/1.5.14
cp "$jcp/javacpp-1.5.14.jar" "$jcp/javacpp-1.5.14-linux-x86_64.jar" .gpucarry/jars/
if [ -z "${NEP_SKIP_MVN:-}" ]; then
  DJL_OFFLINE=true OPT_OUT_TRACKING=true mvn -B -ntp -q -pl native-ep verify -Dnep.cuda=ON
fi
cp -a native-ep/target/classes .gpucarry/classes
cp -a native-ep/target/test-classes .gpucarry/test-classes
rm -f .gpucarry/classes/dev/djlmoe/nativeep/linux-x86_64/libnativeep_cuda.so  # the binding's copy is enough
cmake -S native-ep -B native-ep/target/gpu-build -DNEP_BUILD_CUDA=ON -DNEP_BUILD_TESTS=OFF >/dev/null
cmake --build native-ep/target/gpu-build -j2 --target ep_test ep_bench ll_test ll_bench nativeep_cuda
cp -a native-ep/target/gpu-build/bin native-ep/target/gpu-build/lib .gpucarry/gpu-build/
rm -f .gpucarry/gpu-build/bin/bench_*
du -sh .gpucarry
