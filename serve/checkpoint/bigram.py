"""A "bigram" Qwen3.5 model whose MTP head agrees with it: every draft is accepted, yet the answer is a long
non-repeating walk through the vocabulary (not one constant token). Pure numpy; the synthetic and the tiny
checkpoint writers both take their values from here.

Construction (names as in vLLM's ``qwen3_5.py`` / ``qwen3_5_mtp.py``):

- Every decoder layer's output projection is zero (full attention ``o_proj``, Gated DeltaNet
  ``out_proj``, MLP ``down_proj``; as int4 the qweight nibbles sit at the zero point 8, so they dequantize
  to exactly 0). Each layer then adds 0 to the residual stream, which after the last layer is still the
  token's embedding: ``logits = lm_head(norm(embed(x_t)))``, the next token is a fixed function
  ``f(x_t)``. The other weights keep their usual values, so the kernels do the real work (and the speed is
  the real one).
- ``embed[x] = a * codes[g(x)]``: ``codes`` are random +-1 vectors, one per "ordinary" token (the
  tokenizer's ids minus the special and markup ones); ``g`` is the identity on ordinary ids and maps every
  other id (specials, the ids past the tokenizer) onto an ordinary one. Qwen3.5's RMSNorm (gain 1 + 0)
  turns an embedding back into its +-1 code exactly.
- ``lm_head[succ(o)] = c * codes[o]`` for each ordinary ``o``, zero rows for everything else, where
  ``succ`` is ONE cycle through all ordinary ids in a seeded random order. So ``f = succ o g``: from any
  token the greedy answer walks the whole cycle (hundreds of distinct tokens) before it repeats, and it
  never emits an end-of-sequence or markup token. The winning logit is ``c * hidden``
  (``TARGET_LOGIT``); another row scores ``c * <code_o, code_p>``, and the codes are drawn until the
  largest such overlap leaves ``MIN_MARGIN`` logits (checked, not assumed).
- MTP (``Qwen3_5MultiTokenPredictor.forward``): ``fc(cat[pre_fc_norm_embedding(embed(x_{t+1})),
  pre_fc_norm_hidden(h_t)])`` with ``fc = [I | 0]`` (bf16, as the kit's fixed checkpoint stores it) is
  the +-1 code of ``x_{t+1}``; its decoder layer adds 0 (zero ``o_proj`` and ``down_proj``); ``norm`` of a
  +-1 vector is itself; the shared ``lm_head`` gives ``f(x_{t+1})``, which is the main model's next-next
  token. Every draft, at every position of a multi-token draft, is accepted.

What it is not: a model of the prompt. The answer depends on the last prompt token only, and a chat
template ends every prompt with the same tokens, so every chat prompt gets the same answer (a different
walk per raw completion prompt). Greedy only: on vLLM's CPU build 0.32 at temperature 1.0 the same server
was seen sampling tokens of logprob -27 and rejecting drafts, while greedy followed f exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from serve.checkpoint import autoround

EMBED_SCALE = 2.0**-5  # |embedding entry| (exact in bf16; a real model's are ~0.02)
TARGET_LOGIT = 32.0  # the winning logit, c * hidden
MIN_MARGIN = 8.0  # logits between the winner and the runner-up, over every input token
MAX_DRAWS = 64
ZERO_INT4_WORD = 0x88888888  # eight nibbles at the zero point 8: dequantizes to 0 (auto_round:auto_gptq)
# Output projections: what a decoder layer adds to the residual stream goes through one of these
ZEROED_LEAVES = ("self_attn.o_proj", "linear_attn.out_proj", "mlp.down_proj")


def is_zeroed(module: str) -> bool:
    """Whether a linear (``...layers.N.self_attn.o_proj``, also in ``mtp.layers``) is zero in the bigram
    model."""
    return ".layers." in module and module.endswith(ZEROED_LEAVES)


@dataclass(frozen=True)
class Bigram:
    vocab: int
    hidden: int
    ordinary: np.ndarray  # int64 [n]: the ids the model emits, sorted
    successor: np.ndarray  # int64 [vocab]: f(x), the greedy next token of every id
    codes: np.ndarray  # int8 [n, hidden] of +-1, one per ordinary id (row k is ordinary[k])
    klass: np.ndarray  # int64 [vocab]: index into ordinary/codes of g(x)
    head_scale: float  # c, rounded to bf16
    margin: float  # smallest (winner - runner-up) logit over all inputs, from the bf16 values

    def embedding_rows(self, start: int, stop: int) -> np.ndarray:
        """float32 [stop - start, hidden]: rows of embed_tokens."""
        return self.codes[self.klass[start:stop]].astype(np.float32) * np.float32(EMBED_SCALE)

    def lm_head_rows(self, start: int, stop: int) -> np.ndarray:
        """float32 [stop - start, hidden]: rows of lm_head (zero for ids the model never emits)."""
        # row succ(o) = c * code(o): the cycle inverted on the ordinary ids
        pred = np.full(self.vocab, -1, dtype=np.int64)
        pred[self.successor[self.ordinary]] = np.arange(len(self.ordinary))
        rows = pred[start:stop]
        out = self.codes[np.maximum(rows, 0)].astype(np.float32) * np.float32(self.head_scale)
        out[rows < 0] = 0.0
        return out

    def embedding_bf16(self, start: int, stop: int) -> np.ndarray:
        """uint16 bf16 bit patterns of embedding_rows (a gather from the per-class rows: no float work per
        row, so the 2.5 GB tensors of the full scale stream at memory speed)."""
        table = autoround.float32_to_bf16_bits(self.codes.astype(np.float32) * np.float32(EMBED_SCALE))
        return table[self.klass[start:stop]]

    def lm_head_bf16(self, start: int, stop: int) -> np.ndarray:
        """uint16 bf16 bit patterns of lm_head_rows."""
        table = autoround.float32_to_bf16_bits(
            np.vstack(
                [self.codes.astype(np.float32) * np.float32(self.head_scale), np.zeros((1, self.hidden))]
            )
        )
        pred = np.full(self.vocab, len(self.ordinary), dtype=np.int64)  # the zero row
        pred[self.successor[self.ordinary]] = np.arange(len(self.ordinary))
        return table[pred[start:stop]]

    def fc(self) -> np.ndarray:
        """float32 [hidden, 2 * hidden]: mtp.fc = [identity on the embedding half | zero on the hidden half]."""
        w = np.zeros((self.hidden, 2 * self.hidden), dtype=np.float32)
        w[:, : self.hidden] = np.eye(self.hidden, dtype=np.float32)
        return w


def build(vocab: int, hidden: int, ordinary: Iterable[int], seed: int = 0) -> Bigram:
    ids = np.array(sorted(set(int(i) for i in ordinary)), dtype=np.int64)
    n = len(ids)
    if n < 2 or ids[0] < 0 or ids[-1] >= vocab:
        raise ValueError(f"bigram: need at least 2 ordinary ids inside 0..{vocab - 1}, got {n}")
    rng = np.random.Generator(np.random.PCG64([seed, 0xB16A]))
    order = rng.permutation(n)
    nxt = np.empty(n, dtype=np.int64)  # index -> index of its successor: one cycle through all n
    nxt[order] = order[np.r_[1:n, 0]]
    klass = np.empty(vocab, dtype=np.int64)
    position = np.full(vocab, -1, dtype=np.int64)
    position[ids] = np.arange(n)
    others = np.flatnonzero(position < 0)
    klass[ids] = np.arange(n)
    klass[others] = rng.integers(0, n, len(others))
    successor = ids[nxt[klass]]
    head_scale = float(_bf16(np.float32([TARGET_LOGIT / hidden]))[0])
    for _ in range(MAX_DRAWS):
        codes = np.where(rng.random((n, hidden)) < 0.5, -1, 1).astype(np.int8)
        margin = _margin(codes, head_scale)
        if margin >= MIN_MARGIN:
            return Bigram(vocab, hidden, ids, successor, codes, klass, head_scale, margin)
    raise ValueError(f"bigram: no codes with a {MIN_MARGIN}-logit margin at hidden {hidden} for {n} tokens")


def _margin(codes: np.ndarray, head_scale: float) -> float:
    """Winner minus runner-up over every class: the winner scores c * hidden, the row of another class p
    scores c * <code, code_p>, zero rows score 0."""
    c = codes.astype(np.float32)
    gram = c @ c.T
    hidden = codes.shape[1]
    np.fill_diagonal(gram, -np.inf)
    runner_up = np.maximum(gram.max(axis=1), 0.0)  # the zero rows of lm_head score 0
    return float(head_scale * (hidden - runner_up.max()))


def _bf16(x: np.ndarray) -> np.ndarray:
    return autoround.bf16_bits_to_float32(autoround.float32_to_bf16_bits(x))


def walk(successor: np.ndarray, start: int, steps: int) -> list[int]:
    """The greedy answer from ``start``: f(start), f(f(start)), ..."""
    out, x = [], int(start)
    for _ in range(steps):
        x = int(successor[x])
        out.append(x)
    return out


def zero_int4_words(count: int) -> np.ndarray:
    return np.full(count, ZERO_INT4_WORD, dtype=np.uint32)


def bf16_bytes(rows: np.ndarray) -> np.ndarray:
    """float32 -> the bf16 bytes safetensors stores."""
    return autoround.float32_to_bf16_bits(rows).view(np.uint8).reshape(-1)
