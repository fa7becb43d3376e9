#!/usr/bin/env bash
# Assembles .gpucarry/ at the repository root: what a run on a GPU machine without Java needs beyond
# the working tree. Name ".gpucarry" in the run's carry (the working tree and the carry travel
# together, 64 MiB at most).
#
#   native-ep/bench/make_gpucarry.sh                 # for native-ep/gpu-tests/run_all.sh (the Java check)
#   native-ep/bench/make_gpucarry.sh --djl [--djl-src SRC]   # also DJL training (pretrain --device gpu)
#   native-ep/bench/make_gpucarry.sh --djl --tests [--djl-src SRC]   # also bin/gpu-java-tests
#
#   jre/                   jlink-ed Java 17 runtime (no java.desktop: pretrain then skips its plots)
#   jars/                  javacpp 1.5.14 and its linux-x86_64 jar
#   classes/, test-classes/    native-ep's classes, JNI libraries and the Java GPU check
#   lib/                   (--djl) the recipes' runtime jars and the project's jars, without
#                          pytorch-native-* (the GPU host's libtorch is used), pytorch-jni and
#                          tokenizers (fine-tuning's tokenizer; 19 MB)
#   djl-jni-src/           (--djl) `bin/build-djl-jni prepare` output; on the GPU host:
#                          eval "$(bin/build-djl-jni build --src .gpucarry/djl-jni-src)"
#   tests/                 (--tests, needs --djl) djl-moe/, model-zoo/, recipes/: those modules'
#                          test classes; junit/: the JUnit platform jars (about 3 MB in all)
#
# Builds the project first (mvn install -DskipTests) unless NEP_SKIP_MVN=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
djl=0 djl_src=() tests=0
while [ $# -gt 0 ]; do
  case "$1" in
    --djl) djl=1; shift ;;
    --tests) tests=1; shift ;;
    --djl-src) djl_src=(--djl-src "$2"); shift 2 ;;
    *) echo "make_gpucarry.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$tests" = 0 ] || [ "$djl" = 1 ] || { echo "make_gpucarry.sh: --tests needs --djl (the tests run on lib/)" >&2; exit 2; }
export DJL_OFFLINE=true OPT_OUT_TRACKING=true
grep -qx '/.gpucarry/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpucarry/' >> .git/info/exclude; }
if [ -z "${NEP_SKIP_MVN:-}" ]; then
  mvn -B -ntp -q install -DskipTests
fi
rm -rf .gpucarry && mkdir -p .gpucarry/jars
jlink --add-modules java.base,java.logging,java.management,jdk.unsupported,java.naming,java.xml,java.net.http \
  --output .gpucarry/jre --strip-debug --no-header-files --no-man-pages --compress=2
jcp=${HOME}/.m2/repository/org/bytedeco/javacpp/1.5.14
cp "$jcp/javacpp-1.5.14.jar" "$jcp/javacpp-1.5.14-linux-x86_64.jar" .gpucarry/jars/
cp -a native-ep/target/classes .gpucarry/classes
cp -a native-ep/target/test-classes .gpucarry/test-classes
rm -f .gpucarry/classes/dev/djlmoe/nativeep/linux-x86_64/libnativeep_cuda.so  # the cuda binding's copy serves
if [ "$djl" = 1 ]; then
  mvn -B -ntp -q -pl recipes dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$PWD/.gpucarry/lib" \
    -DexcludeArtifactIds=pytorch-native-cpu,pytorch-jni,tokenizers
  cp recipes/target/recipes-0.1.0-SNAPSHOT.jar .gpucarry/lib/
  # The jar holds the CUDA plug-in twice (the core's folder and the binding's); as in classes/,
  # the binding's copy serves: 1.2 MB less to carry.
  if command -v zip >/dev/null; then
    zip -q -d .gpucarry/lib/native-ep-0.1.0-SNAPSHOT.jar 'dev/djlmoe/nativeep/linux-x86_64/libnativeep_cuda.so' || true
  fi
  bin/build-djl-jni prepare --out .gpucarry/djl-jni-src "${djl_src[@]}"
fi
if [ "$tests" = 1 ]; then
  for m in djl-moe model-zoo recipes; do
    mkdir -p .gpucarry/tests && cp -a "$m/target/test-classes" ".gpucarry/tests/$m"
  done
  mvn -B -ntp -q -pl djl-moe dependency:copy-dependencies -DincludeScope=test \
    -DincludeGroupIds=org.junit.jupiter,org.junit.platform,org.opentest4j,org.apiguardian \
    -DexcludeArtifactIds=junit-jupiter -DoutputDirectory="$PWD/.gpucarry/tests/junit"
fi
size=$(du -sb .gpucarry | cut -f1)
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
if [ "$djl" = 1 ] && [ $((size + tree)) -gt $((64 << 20)) ]; then
  # lib/native-ep-*.jar holds the same classes and JNI libraries (run_all.sh falls back to it).
  rm -rf .gpucarry/classes
  echo "make_gpucarry.sh: classes/ left out (lib/native-ep-0.1.0-SNAPSHOT.jar serves) to stay under 64 MiB"
  size=$(du -sb .gpucarry | cut -f1)
fi
echo ".gpucarry: $((size >> 20)) MiB; with the tracked tree $(((size + tree) >> 20)) MiB of the 64 MiB a run may carry"
