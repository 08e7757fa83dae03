#!/bin/bash
# Runs the AMX tile kernels on a CPU without AMX or AVX-512: AVX-512/AVX2 through SIMDe
# (apt install libsimde-dev), tiles emulated in scalar code (immintrin.h here shadows the
# compiler's), results against the float64 reference of each format's dequantizer.
# Needs a configured build for the generated IQ grids: pip install --no-build-isolation -e .
set -e
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
gen=$(dirname "$(dirname "$(find "$root/build" -name iq_grids.h | head -1)")")
out=$(mktemp -d)
flags="-std=c++17 -O1 -I$here -I$root/native/include -I$root/native/src -I$gen -w \
  -DMOEBOX_TARGET_AVX2= -DMOEBOX_TARGET_AVX512= -DMOEBOX_TARGET_AMX="
for f in "$root"/native/src/formats/k_quants_amx.cpp "$root"/native/src/formats/k_quants.cpp \
         "$root"/native/src/formats/iq_amx.cpp "$root"/native/src/formats/iq1.cpp "$root"/native/src/formats/iq2.cpp \
         "$root"/native/src/formats/iq3.cpp "$root"/native/src/formats/iq4.cpp \
         "$root"/native/src/amx.cpp "$here"/main.cpp "$here"/stubs.cpp; do
  g++ $flags -c "$f" -o "$out/$(basename "$f" .cpp).o"
done
g++ "$out"/*.o -o "$out/amx_emu"
"$out/amx_emu"
