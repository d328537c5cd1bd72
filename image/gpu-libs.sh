#!/usr/bin/env bash
# The GPU variant's user-space CUDA stack, from PyPI wheels (binary only, exact versions):
# ONNX Runtime's CUDA 13 build (onnxruntime-gpu) and the CUDA 13 runtime, cuBLAS, cuFFT, cuRAND,
# NVRTC, nvJitLink and cuDNN 9 libraries. Their shared libraries are unpacked flat into OUTDIR
# with a SHA256SUMS file (and the wheels' own digests in WHEELS.sha256): image/build.sh
# --ort-gpu OUTDIR installs them into /usr/lib/airlock/cuda. Wheels are cached between runs.
#   image/gpu-libs.sh OUTDIR
set -euo pipefail
out=${1:?usage: gpu-libs.sh OUTDIR}
ort_version=${ORT_GPU_VERSION:-1.31.1}
wheels=(
  "onnxruntime-gpu==$ort_version"
  "nvidia-cuda-runtime==13.5.37"
  "nvidia-cublas==13.10.0.20"
  "nvidia-cufft==12.5.0.14"
  "nvidia-curand==10.4.5.25"
  "nvidia-cuda-nvrtc==13.5.37"
  "nvidia-nvjitlink==13.5.37"
  "nvidia-cudnn-cu13==9.28.1.4"
)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/airlock/gpu-wheels
mkdir -p "$cache" "$out"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$cache" "${wheels[@]}"
rm -rf "${out:?}"/* && x=$(mktemp -d) && trap 'rm -rf "$x"' EXIT
for w in "$cache"/*.whl; do
  case $(basename "$w") in
    onnxruntime_gpu-"$ort_version"-*|nvidia_*) ;;
    *) continue ;;
  esac
  sha256sum "$w" | sed "s|$cache/||" >> "$out/WHEELS.sha256"
  unzip -q -o "$w" '*.so*' -d "$x"
done
find "$x" -name '*.so*' -type f -exec cp -t "$out" {} +
# The CPU library's name is what airlockd looks for; the CUDA provider sits beside it.
(cd "$out" && sha256sum -- *.so* > SHA256SUMS)
echo "gpu-libs: $(ls "$out" | grep -c '\.so') libraries, $(du -sh "$out" | cut -f1) in $out"
