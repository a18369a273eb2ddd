"""llama-cpp-python over any GGUF: tokenizer view, chat prompts, prefix-cached logits.

The KV cache is kept across calls, in one or more KV sequences: a request for a prefix that
shares its first k tokens with a sequence evaluates only the new tokens (in a copy of the
sequence when it holds more), so branching samplers pay only for the tokens that differ, and
SMC's particles, each in its own sequence, never evaluate a suffix twice (kv_sequences).
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from .base import TokenizerView, log_softmax
from .gguf_vocab import read_vocabulary
from .kv_sequences import Slot, SlotTable


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hash of the model file, cached next to nothing: callers keep it in results."""
    return _sha256_cached(str(Path(path).resolve()), os.path.getsize(path), os.path.getmtime(path))


@lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _import_llama():
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - exercised only without the package
        raise ConfigError(f"llama-cpp-python is not installed: {exc}") from exc
    return llama_cpp


def check_model_path(path: str) -> None:
    if not os.path.exists(path):
        raise ConfigError(f"model file not found: {path}")
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ConfigError(f"model file is not a GGUF file: {path}")


@lru_cache(maxsize=4)
def load_tokenizer_view(path: str) -> "GGUFTokenizer":
    """A vocab-only load of a GGUF: enough for engines and replay, no weights."""
    return GGUFTokenizer(path)


class GGUFTokenizer:
    """The vocabulary of a GGUF file (gguf_vocab: read through llama.cpp once, then cached on
    disk); llama.cpp's own tokenizer is loaded (vocab-only) on first use, so a process that only
    needs token bytes (a replay worker, an engine) never loads it."""

    def __init__(self, path: str, llama: Any = None) -> None:
        check_model_path(path)
        self.path = path
        self._llama = llama
        vocab = read_vocabulary(path, self.model)
        # Chat models end an answer with end-of-turn; that is the stop token engines share.
        stop = vocab.eot if vocab.eot >= 0 else vocab.eos
        self.view = TokenizerView(
            token_bytes=vocab.token_bytes,
            eos_id=int(stop),
            special_ids=vocab.special,
            bos_id=vocab.bos if vocab.bos >= 0 else None,
            name=Path(path).name,
            gguf_path=path,
            encoder=self._tokenize,
            stop_ids=frozenset(vocab.eog - {int(stop)}),
        )
        self.add_bos = vocab.add_bos
        self.metadata: dict[str, str] = vocab.metadata

    def model(self) -> Any:
        """llama.cpp's model object (vocab-only unless given), loaded on first use."""
        if self._llama is None:
            self._llama = _import_llama().Llama(model_path=self.path, vocab_only=True, verbose=False)
        return self._llama

    def _tokenize(self, data: bytes) -> list[int]:
        return self.model().tokenize(data, add_bos=False, special=False)

    def encode(self, text: str) -> list[int]:
        return self.model().tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def encode_special(self, text: str) -> list[int]:
        """Tokenize text that contains control-token markup (chat templates)."""
        return self.model().tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """Render with the GGUF's own chat template.

        GGUFs without a template (this Gemma 3 270M has none) get their family's turn format
        when it is known (Gemma: <start_of_turn>/<end_of_turn>, system folded into the user
        turn), else plain lines.
        """
        template = self.metadata.get("tokenizer.chat_template")
        if template:
            import jinja2

            env = jinja2.Environment(loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True)

            def raise_exception(message: str) -> None:
                raise jinja2.TemplateError(message)

            env.globals["raise_exception"] = raise_exception
            return env.from_string(template).render(
                messages=messages, add_generation_prompt=True, bos_token="", eos_token=""
            )
        if str(self.metadata.get("general.architecture", "")).startswith("gemma"):
            return render_gemma(messages)
        return "".join(m["content"] + "\n" for m in messages)


def render_gemma(messages: list[dict[str, str]]) -> str:
    """Gemma's turn format; Gemma has no system role, so system text opens the first user turn."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    out = []
    for m in messages:
        if m["role"] == "system":
            continue
        content = m["content"]
        if system and m["role"] == "user":
            content, system = f"{system}\n\n{content}", ""
        role = "model" if m["role"] == "assistant" else "user"
        out.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    return "".join(out) + "<start_of_turn>model\n"


class LlamaCppLM:
    """A GGUF model through llama-cpp-python's low-level API, with `n_seq` KV sequences.

    `n_ctx` is the context of each sequence. One sequence is the classic prefix cache (a branch
    cuts the cache back to the common prefix); more let diverged branches (SMC particles) each
    keep their own cache (kv_sequences). The sequences are separate KV streams (kv_unified off):
    a unified cache interleaves the sequences' cells, which changes the attention's summation
    order and moved logits by up to 0.65 here, while a stream keeps straight decoding's layout.
    """

    def __init__(
        self,
        model_path: str,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        seed: int = 0,
        n_seq: int = 1,
        lm_batch: bool = False,
    ) -> None:
        check_model_path(model_path)
        llama_cpp = _import_llama()
        self._llama_cpp = llama_cpp
        self.model_path = model_path
        self.n_threads = n_threads or max(1, os.cpu_count() or 1)
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.n_seq = n_seq
        self.lm_batch = lm_batch  # SMC evaluates its particles' tokens in one batch (logits_many)
        self._model, self._ctx, self._batch = _open_context(llama_cpp, model_path, n_ctx, n_seq, n_batch,
                                                            self.n_threads)
        self._tok = load_tokenizer_view(model_path)
        self.tokenizer: TokenizerView = self._tok.view
        self.name = Path(model_path).name
        self._vocab = self.tokenizer.vocab_size
        self._slots = SlotTable(n_seq)
        self._anchor = 0  # length of the prompt evaluated as one batch; 0: the next prefix is a new prompt
        self._anchor_tokens: list[int] = []
        self._anchor_logits: np.ndarray | None = None
        self.forward_tokens = 0  # tokens actually pushed through the network
        self.prompt_tokens = 0  # of which evaluated as prompts (one batch each)
        self.decodes = 0  # llama_decode calls
        self.copies = 0  # sequence copies (seq_cp of a whole KV stream)
        self.calls = 0

    # tokenizer -----------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text)

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        text = self._tok.render_chat(messages)
        ids = self._tok.encode_special(text)
        if self._tok.add_bos and self.tokenizer.bos_id is not None and (not ids or ids[0] != self.tokenizer.bos_id):
            ids = [self.tokenizer.bos_id] + ids
        return ids

    # scores ----------------------------------------------------------------
    def logits(self, prefix: Sequence[int]) -> np.ndarray:
        """Logits after `prefix`, a pure function of the prefix whatever was asked before.

        llama.cpp's quantised kernels give different numbers for a token evaluated inside a
        batch and alone (up to ~0.8 in a logit here), so the evaluation schedule is fixed:
        the prompt (the first prefix not extending the cached one) as one batch, and every
        later token alone, in the sequence that shares the most of the prefix. Branching then
        only changes the cost, never the numbers.
        """
        self.calls += 1
        prefix = self._checked(prefix)
        if self._is_new_prompt(prefix):
            return self._start(prefix)
        if len(prefix) == self._anchor:
            return self._anchor_logits
        held = self._slots.holding(prefix, exact=True)
        if held is not None:
            self._slots.touch(held)
            return held.logits
        slot = self._prepare(prefix, exact=True, exclude=set())
        self._extend_alone(slot, prefix)
        return slot.logits

    def logits_many(self, prefixes: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Logits after each prefix, the last token of every prefix evaluated in one llama_decode.

        Faster for SMC's particles, but a token's numbers then depend on what it was batched
        with: these logits (and every later one built on their KV) are not those of straight
        decoding. Prefixes that need more than their last token get the rest alone first.
        """
        self.calls += 1
        prefixes = [self._checked(p) for p in prefixes]
        if any(self._is_new_prompt(p) for p in prefixes):  # another prompt: no batch to share
            return [self.logits(p).copy() for p in prefixes]
        out: list[np.ndarray | None] = [None] * len(prefixes)
        pending: list[tuple[int, Slot, list[int]]] = []
        claimed: set[int] = set()
        for i, prefix in enumerate(prefixes):
            out[i] = self._ready(prefix)
            if out[i] is not None:
                continue
            same = next((p for p in pending if p[2] == prefix), None)
            if same is not None:
                pending.append((i, same[1], prefix))
                continue
            if len(claimed) >= self.n_seq:  # every sequence waits in this batch: run it first
                self._decode_pending(pending, out)
                pending, claimed = [], set()
            slot = self._prepare(prefix[:-1], exact=False, exclude=claimed)
            if len(slot.tokens) < len(prefix) - 1:  # not held whole (a new branch): the rest alone
                self._extend_alone(slot, prefix[:-1])
            claimed.add(slot.seq_id)
            pending.append((i, slot, prefix))
        self._decode_pending(pending, out)
        return out  # type: ignore[return-value]

    def logprobs(self, prefix: Sequence[int]) -> np.ndarray:
        return log_softmax(self.logits(prefix))

    def forget(self) -> None:
        """Drop every cached sequence: the next prefix is a new prompt (straight decoding again)."""
        self._anchor = 0

    # sequences ---------------------------------------------------------------
    def _checked(self, prefix: Sequence[int]) -> list[int]:
        prefix = list(prefix)
        if not prefix:
            raise ValueError("logits() needs a non-empty prefix (the prompt)")
        if len(prefix) > self.n_ctx:
            raise ValueError(f"prefix of {len(prefix)} tokens exceeds n_ctx={self.n_ctx}")
        return prefix

    def _is_new_prompt(self, prefix: list[int]) -> bool:
        a = self._anchor
        return not a or len(prefix) < a or prefix[:a] != self._anchor_tokens

    def _start(self, prompt: list[int]) -> np.ndarray:
        """A new prompt: every sequence dropped, the prompt evaluated as one batch in the first,
        and remembered as the anchor every later prefix extends."""
        self._llama_cpp.llama_memory_clear(self._ctx.memory, False)
        self._slots.clear()
        slot = self._slots.slots[0]
        for start in range(0, len(prompt), self.n_batch):
            chunk = prompt[start:start + self.n_batch]
            self._decode([(t, start + j, 0) for j, t in enumerate(chunk)])
        self.forward_tokens += len(prompt)
        self.prompt_tokens += len(prompt)
        logits = self._read_logits(-1)
        slot.reset(prompt, exact=len(prompt))
        slot.logits = logits
        self._slots.touch(slot)
        self._anchor, self._anchor_tokens, self._anchor_logits = len(prompt), prompt, logits
        return logits

    def _prepare(self, target: list[int], exact: bool, exclude: set[int]) -> Slot:
        """A slot (outside `exclude`) holding a prefix of `target` of at least the anchor, to be
        extended: the best slot itself when it holds no more than what is shared, else the
        shared part copied into the least recently used slot (or cut in place when that is it).
        When the logits after all of `target` are wanted (exact) one token is always left to do."""
        best, common = self._slots.best(target, exact)
        if exact and common == len(target):
            common -= 1  # the logits after target's last token come from evaluating it
        if best.seq_id not in exclude and len(best.tokens) == common:
            self._slots.touch(best)
            return best
        slot = self._slots.victim(exclude)
        memory = self._ctx.memory
        if slot is not best:
            self._llama_cpp.llama_memory_seq_rm(memory, slot.seq_id, -1, -1)
            self._llama_cpp.llama_memory_seq_cp(memory, best.seq_id, slot.seq_id, -1, -1)
            self.copies += 1
        self._llama_cpp.llama_memory_seq_rm(memory, slot.seq_id, common, -1)
        slot.reset(best.tokens[:common], exact=min(best.exact, common))
        self._slots.touch(slot)
        return slot

    def _extend_alone(self, slot: Slot, prefix: list[int]) -> None:
        """Evaluate the rest of `prefix` in `slot`, one token per llama_decode."""
        exact = slot.exact == len(slot.tokens)
        for pos in range(len(slot.tokens), len(prefix)):
            self._decode([(prefix[pos], pos, slot.seq_id)])
        self.forward_tokens += len(prefix) - len(slot.tokens)
        slot.tokens = list(prefix)
        if exact:
            slot.exact = len(prefix)
        slot.logits = self._read_logits(-1)

    def _ready(self, prefix: list[int]) -> np.ndarray | None:
        """Logits already known for `prefix` (the anchor's, or a slot holding exactly it)."""
        if len(prefix) == self._anchor:
            return self._anchor_logits.copy()
        held = self._slots.holding(prefix, exact=False)
        if held is None:
            return None
        self._slots.touch(held)
        return held.logits.copy()

    def _decode_pending(self, pending: list[tuple[int, Slot, list[int]]], out: list[np.ndarray | None]) -> None:
        """Every pending slot's last token in one batch (a prefix asked twice shares its slot)."""
        firsts: dict[int, tuple[Slot, list[int]]] = {}
        for _, slot, prefix in pending:
            firsts.setdefault(slot.seq_id, (slot, prefix))
        if not firsts:
            return
        items = [(prefix[-1], len(prefix) - 1, slot.seq_id) for slot, prefix in firsts.values()]
        self._decode(items)
        self.forward_tokens += len(items)
        for j, (slot, prefix) in enumerate(firsts.values()):
            slot.tokens = list(prefix)
            slot.logits = self._read_logits(j)
        for i, slot, _ in pending:
            out[i] = slot.logits.copy()

    def _decode(self, items: list[tuple[int, int, int]]) -> None:
        """One llama_decode of (token, position, sequence) items; logits for the last item of
        each sequence only (one item per sequence in a multi-sequence batch)."""
        batch = self._batch.batch
        batch.n_tokens = len(items)
        last = {seq: j for j, (_, _, seq) in enumerate(items)}
        for j, (token, pos, seq) in enumerate(items):
            batch.token[j], batch.pos[j], batch.n_seq_id[j] = token, pos, 1
            batch.seq_id[j][0] = seq
            batch.logits[j] = last[seq] == j
        rc = self._llama_cpp.llama_decode(self._ctx.ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        self.decodes += 1

    def _read_logits(self, i: int) -> np.ndarray:
        ptr = self._llama_cpp.llama_get_logits_ith(self._ctx.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self._vocab,)).copy()

    def info(self) -> dict[str, object]:
        md = self._tok.metadata
        return {
            "model": self.name,
            "model_path": str(Path(self.model_path).resolve()),
            "model_sha256": file_sha256(self.model_path),
            "model_arch": md.get("general.architecture"),
            "model_name": md.get("general.name"),
            "vocab_size": self._vocab,
            "eos_id": self.tokenizer.eos_id,
            "stop_ids": sorted(self.tokenizer.stops),
            "n_ctx": self.n_ctx,
            "kv_sequences": self.n_seq,
            "lm_batch": self.lm_batch,
            "lm_threads": self.n_threads,
            "llama_cpp_python": getattr(self._llama_cpp, "__version__", "?"),
        }


def _open_context(llama_cpp: Any, model_path: str, n_ctx: int, n_seq: int, n_batch: int, n_threads: int):
    """The weights, a context with `n_seq` separate KV streams of `n_ctx` cells each, and a batch."""
    from llama_cpp import _internals
    from llama_cpp._logger import set_verbose

    if not 1 <= n_seq <= llama_cpp.llama_max_parallel_sequences():
        raise ConfigError(f"KV sequences must be 1..{llama_cpp.llama_max_parallel_sequences()}, got {n_seq}")
    set_verbose(False)
    _backend_init(llama_cpp)
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0
    model = _internals.LlamaModel(path_model=model_path, params=mparams, verbose=False)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx, cparams.n_seq_max, cparams.kv_unified = n_ctx * n_seq, n_seq, False
    cparams.n_batch = cparams.n_ubatch = n_batch
    cparams.n_threads = cparams.n_threads_batch = n_threads
    cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = _internals.LlamaContext(model=model, params=cparams, verbose=False)
    got = llama_cpp.llama_n_ctx_seq(ctx.ctx)
    if got < n_ctx:
        raise ConfigError(f"llama.cpp gave {got} cells per KV sequence, {n_ctx} asked (n_ctx)")
    batch = _internals.LlamaBatch(n_tokens=max(n_batch, n_seq), embd=0, n_seq_max=1, verbose=False)
    return model, ctx, batch


@lru_cache(maxsize=1)
def _backend_init(llama_cpp: Any) -> None:
    llama_cpp.llama_backend_init()
