"""Any Hugging Face causal LM (transformers + torch) behind the LanguageModel seam.

Same contract as the llama.cpp backend: logits are a function of the prefix. The evaluation
schedule is fixed: a prompt (a prefix that does not extend the cached one past its prompt) goes
through the network as one batch, every later token alone, on top of a KV cache
(`past_key_values`) cropped back to the common prefix. On CPU in float32 the logits after a
branch are then bit-identical to a straight evaluation (tests/test_transformers_lm.py); on a
GPU see docs/transformers.md. Caches that cannot be cropped (sliding-window or linear-attention
layers) go back to a copy of the prompt's cache instead: the same numbers, more work.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..environment import package_version
from ..errors import ConfigError
from ..tasks.hub import offline_mode
from .base import TokenizerView, log_softmax
from .transformers_gguf import vocab_gguf_path
from .transformers_vocab import continuation_encoder, vocabulary_bytes

DTYPES = ("float32", "bfloat16", "float16")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".json", ".model", ".txt", ".jinja")


def _import() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:  # pragma: no cover - only without the extra
        raise ConfigError("--lm transformers needs the transformers extra "
                          f"(pip install -c constraints.txt -e '.[transformers]'): {exc}") from exc
    return torch, transformers


def resolve_device(torch: Any, device: str) -> str:
    """'auto' is the first CUDA device when there is one, else the CPU; a CUDA device that is not
    there is a configuration error, not a silent CPU run."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--lm-device {device}: torch {torch.__version__} sees no CUDA device")
    if device != "cpu" and not device.startswith(("cuda", "mps", "xpu")):
        raise ConfigError(f"--lm-device {device!r}: expected cpu, cuda, cuda:N or auto")
    return device


def model_source(name_or_path: str, offline: bool) -> tuple[str, Path | None]:
    """(what from_pretrained loads, the local directory of its files when known).

    A local directory is used as is; anything else is a hub name, read from the local Hugging Face
    cache when offline (one clear line when it is not there)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        raise ConfigError(f"--model {name_or_path}: --lm transformers needs a model directory or a hub name "
                          "(a GGUF file is for --lm llamacpp)")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"--model {name_or_path}: no config.json in this directory")
        return str(path), path
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name_or_path, "config.json")
    except ValueError as exc:  # not a valid repository id either
        raise ConfigError(f"--model {name_or_path}: neither a directory nor a hub model name ({exc})") from exc
    if isinstance(cached, str):
        return name_or_path, Path(cached).parent
    if offline:
        raise ConfigError(f"--model {name_or_path}: not in the local Hugging Face cache and offline "
                          "(HF_HUB_OFFLINE/CDBENCH_OFFLINE/--offline); download it first or give a local directory")
    return name_or_path, None


def files_digest(directory: Path | None) -> str | None:
    """sha256 over the weight, config and tokenizer files (name and sha256 of each), so results name
    the exact model; the per-file hashes are cached like the GGUF's."""
    if directory is None:
        return None
    from .llamacpp import file_sha256

    h = hashlib.sha256()
    for f in sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)):
        h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def stop_tokens(tokenizer: Any, model: Any) -> tuple[int, frozenset[int]]:
    """(eos_id, other stops): the tokenizer's EOS first, then the generation config's EOS ids
    (chat models list end-of-turn there too)."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    gen = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += [int(gen)] if isinstance(gen, int) else [int(i) for i in gen or []]
    if not ids:
        raise ConfigError(f"model {tokenizer.name_or_path}: neither its tokenizer nor its generation config names "
                          "an end-of-sequence token")
    return ids[0], frozenset(ids[1:]) - {ids[0]}


def build_view(tokenizer: Any, model: Any, vocab_size: int, name: str) -> TokenizerView:
    """The TokenizerView engines share: bytes of every output row, stops, specials, encoder, and
    a vocab-only GGUF so llama.cpp grammars can run too (when the gguf package is there)."""
    token_bytes, special = vocabulary_bytes(tokenizer, vocab_size)
    eos_id, stops = stop_tokens(tokenizer, model)
    ends = stops | {eos_id}
    if max(ends) >= vocab_size:
        raise ConfigError(f"model {name}: stop token {max(ends)} is outside its {vocab_size} output rows")
    token_bytes = tuple(b"" if i in ends else b for i, b in enumerate(token_bytes))
    bos = tokenizer.bos_token_id
    return TokenizerView(
        token_bytes=token_bytes, eos_id=eos_id, special_ids=special | ends, bos_id=bos, name=name,
        gguf_path=vocab_gguf_path(token_bytes, eos_id, bos),
        encoder=continuation_encoder(tokenizer, token_bytes), stop_ids=stops,
    )


class TransformersLM:
    """A Hugging Face causal LM with a persistent prefix cache (see the module docstring)."""

    def __init__(self, name_or_path: str, device: str = "cpu", dtype: str = "float32", n_ctx: int = 4096,
                 n_threads: int | None = None, offline: bool | None = None) -> None:
        torch, transformers = _import()
        if dtype not in DTYPES:
            raise ConfigError(f"--lm-dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        self._torch = torch
        self.device = resolve_device(torch, device)
        self.dtype = dtype
        if n_threads:
            torch.set_num_threads(n_threads)
        source, self.model_dir = model_source(name_or_path, offline_mode(offline))
        self.name_or_path = name_or_path
        self.tok, self.model = self._load(transformers, source, offline_mode(offline))
        rows = int(self.model.get_output_embeddings().weight.shape[0])
        self.name = Path(name_or_path).name or name_or_path
        self.tokenizer: TokenizerView = build_view(self.tok, self.model, rows, self.name)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        self.n_ctx = min(n_ctx, int(limit)) if limit else n_ctx
        self._keep = {"logits_to_keep": 1} if _takes(self.model, "logits_to_keep") else {}
        # transformers 5.2x renamed past_key_values to cache; older releases (and remote code) have the old name
        self._cache_arg = "cache" if _takes(self.model, "cache") else "past_key_values"
        self._cache: Any = None
        self._anchor_cache: Any = None  # a copy of the prompt's cache, for caches that cannot crop
        self._evaluated: list[int] = []
        self._last: np.ndarray | None = None
        self._anchor = 0
        self._anchor_logits: np.ndarray | None = None
        self.forward_tokens = 0
        self.calls = 0

    def _load(self, transformers: Any, source: str, offline: bool) -> tuple[Any, Any]:
        try:
            tok = transformers.AutoTokenizer.from_pretrained(source, local_files_only=offline)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                source, dtype=getattr(self._torch, self.dtype), local_files_only=offline)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"--model {self.name_or_path}: cannot load with transformers: {first[:300]}") from exc
        if self.model_dir is None and not Path(source).is_dir():  # downloaded just now: find its snapshot
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(source, "config.json")
            self.model_dir = Path(cached).parent if isinstance(cached, str) else None
        return tok, model.to(self.device).eval()

    # tokenizer -----------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Text as it continues a generation: no special tokens, no sentencepiece prefix space."""
        assert self.tokenizer.encoder is not None
        return self.tokenizer.encoder(text.encode("utf-8"))

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """The tokenizer's chat template when it has one (system text folded into the first user
        turn if the template refuses a system role); else plain lines after the tokenizer's BOS."""
        if not getattr(self.tok, "chat_template", None):
            text = "".join(m["content"] + "\n" for m in messages)
            return list(self.tok(text, add_special_tokens=True)["input_ids"])
        try:
            text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # jinja's raise_exception: "System role not supported" and the like
            text = self.tok.apply_chat_template(fold_system(messages), tokenize=False, add_generation_prompt=True)
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    # scores ----------------------------------------------------------------
    def logits(self, prefix: Sequence[int]) -> np.ndarray:
        """Logits after `prefix`: the prompt as one batch, each later token alone (see module doc)."""
        self.calls += 1
        prefix = list(prefix)
        if not prefix:
            raise ValueError("logits() needs a non-empty prefix (the prompt)")
        if len(prefix) > self.n_ctx:
            raise ValueError(f"prefix of {len(prefix)} tokens exceeds n_ctx={self.n_ctx}")
        if prefix == self._evaluated and self._last is not None:
            return self._last
        a = self._anchor
        if a and len(prefix) >= a and prefix[:a] == self._evaluated[:a]:
            if len(prefix) == a:
                self._rewind(a)
                self._last = self._anchor_logits
            else:
                start = self._rewind(_common(self._evaluated, prefix, a))
                for token in prefix[start:]:
                    self._last = self._forward([token])
        else:
            self._new_prompt(prefix)
        self._evaluated = prefix
        return self._last

    def _new_prompt(self, prefix: list[int]) -> None:
        from transformers import DynamicCache

        try:
            self._cache = DynamicCache(config=self.model.config)
        except TypeError:  # older transformers: no config argument
            self._cache = DynamicCache()
        self._last = self._forward(prefix)
        self._anchor, self._anchor_logits = len(prefix), self._last
        self._anchor_cache = None if _croppable(self._cache) else copy.deepcopy(self._cache)

    def _rewind(self, common: int) -> int:
        """Bring the cache back to `common` tokens; returns where evaluation restarts (the prompt's
        end, for a cache that cannot crop and is not simply extended)."""
        have = self._cache.get_seq_length() if self._anchor_cache is None else len(self._evaluated)
        if common >= have:
            return have
        if self._anchor_cache is None:
            self._cache.crop(common - have)  # a negative count: tokens to drop (transformers 4 and 5)
            return common
        self._cache = copy.deepcopy(self._anchor_cache)
        return self._anchor

    def _forward(self, ids: list[int]) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            inp = torch.tensor([ids], dtype=torch.long, device=self.device)
            out = self.model(input_ids=inp, use_cache=True, **{self._cache_arg: self._cache}, **self._keep)
        self._cache = getattr(out, "cache", None) or out.past_key_values
        self.forward_tokens += len(ids)
        return out.logits[0, -1].to(torch.float32).cpu().numpy()

    def logprobs(self, prefix: Sequence[int]) -> np.ndarray:
        return log_softmax(self.logits(prefix))

    def info(self) -> dict[str, object]:
        cfg = self.model.config
        revision = getattr(cfg, "_commit_hash", None)
        if revision is None and self.model_dir is not None and self.model_dir.parent.name == "snapshots":
            revision = self.model_dir.name
        return {
            "model": self.name, "lm": "transformers", "model_name_or_path": self.name_or_path,
            "model_path": str(self.model_dir.resolve()) if self.model_dir else None,
            "model_sha256": files_digest(self.model_dir), "model_revision": revision,
            "model_arch": getattr(cfg, "model_type", None), "vocab_size": self.tokenizer.vocab_size,
            "tokenizer_size": len(self.tok), "eos_id": self.tokenizer.eos_id,
            "stop_ids": sorted(self.tokenizer.stops), "n_ctx": self.n_ctx, "device": self.device,
            "dtype": self.dtype, "lm_threads": self._torch.get_num_threads(),
            "chat_template": bool(getattr(self.tok, "chat_template", None)),
            "torch": self._torch.__version__, "transformers": package_version("transformers"),
            "tokenizers": package_version("tokenizers"),
        }


def fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """System text moved to the start of the first user turn, for templates without a system role."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    out = [dict(m) for m in messages if m["role"] != "system"]
    for m in out:
        if system and m["role"] == "user":
            m["content"], system = f"{system}\n\n{m['content']}", ""
    return out


def _common(a: list[int], b: list[int], start: int) -> int:
    """Length of the common prefix of a and b (known to be >= start), kept below len(b) so the
    last token of b is evaluated again to give its logits."""
    n = start
    limit = min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return min(n, len(b) - 1)


def _croppable(cache: Any) -> bool:
    """Every layer a plain full-attention cache (DynamicCache.crop cannot restore what a
    sliding window or a recurrent state has already dropped)."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        return hasattr(cache, "crop")
    return all(type(layer).__name__ == "DynamicLayer" for layer in layers)


def _takes(model: Any, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
