"""A lean token-by-token decoder for Llama-family models (SmolLM2): the same weights, fewer ops.

Hugging Face's forward pass is general, and for one new token per row on a CPU most of its time is
not the matmuls: each step it rebuilds the attention mask, grows every layer's KV cache by
concatenation, casts activations for three separate q/k/v and two gate/up projections, and walks
the module tree. :class:`LlamaDecoder` runs the decode steps of :func:`base_policy.sampling.sample_tokens`
with the model's own weights, taken once per sampling call:

- q, k and v as one matmul, gate and up as one (the weights concatenated; bf16 under bf16 autocast);
- a preallocated KV cache written in place, and grouped-query attention without repeating K and V
  (the one query token's heads are grouped under their KV head);
- the model's own rotary embedding module for cos/sin, so any rope scaling it has is kept;
- the residual stream and the norms in float32, as under autocast.

The prompt runs through the same packed weights in one pass per layer (causal and padding mask,
the positions given), filling the cache. The numbers are those of the HF path to bf16 rounding
(``tests/test_fast_decode.py`` compares logits step by step in fp32 and bf16). The packed weights are
the decoder's only bf16 copy: sampling swaps in no :class:`base_policy.sampling.Bf16Weights` copies
for a model it decodes (:meth:`base_policy.sampling.Bf16Weights.sampling`). A forward hook on a decoder layer (the hydra trunk's
:meth:`rl_finetune.hydra.FrozenTrunk.recording`) is called with that layer's output at every step, as
the module would call it. Anything else falls back to the HF path: :func:`llama_decoder` returns None
for a model that is not a plain Llama (other architectures, biases, LoRA or other wrapped linears,
hooks elsewhere). docs/base_policy.md has the measured speed.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import rotate_half


def _plain_linear(m: nn.Module) -> bool:
    return type(m) is nn.Linear and m.bias is None


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or getattr(m, "_hf_hook", None) is not None)


class _Packed:
    """``x @ weight.T`` for 2-D ``x``, with the weight in oneDNN's prepacked bf16 layout where this torch
    build has it (what inductor's CPU freezing uses; 1.3-1.6x faster matmuls here at 16-32 rows), else
    the plain weight (float32 runs, other devices, a build without the op)."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype, batch: int):
        weight = weight.detach().to(dtype)
        self.weight: torch.Tensor | None = weight
        self.packed: torch.Tensor | None = None
        if dtype != torch.bfloat16 or weight.device.type != "cpu":
            return
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight, batch)
            probe = torch.linspace(-1, 1, 2 * weight.shape[1], dtype=dtype).view(2, -1)
            got = torch.ops.mkldnn._linear_pointwise(probe, packed, None, "none", [], "")
        except (RuntimeError, AttributeError):
            return
        if torch.allclose(got.float(), F.linear(probe, weight).float(), rtol=2e-2, atol=2e-2):
            self.packed, self.weight = packed, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        return F.linear(x, self.weight)


#: packed weights kept while their source weight lives (frozen weights are packed once, not per call):
#: id of the first source tensor -> (weak reference to it, identities and in-place versions of all sources, packed)
_PACKED: dict[int, tuple[weakref.ref, tuple, _Packed]] = {}


def _pack(sources: list[torch.Tensor], dtype: torch.dtype, batch: int) -> _Packed:
    first = sources[0]
    key = (tuple((id(t), t._version) for t in sources), dtype)
    hit = _PACKED.get(id(first))
    if hit is not None and hit[0]() is first and hit[1] == key:
        return hit[2]
    with torch.no_grad():
        packed = _Packed(first if len(sources) == 1 else torch.cat(sources), dtype, batch)
    ident = id(first)
    _PACKED[ident] = (weakref.ref(first, lambda _ref: _PACKED.pop(ident, None)), key, packed)
    return packed


def decodable(lm: nn.Module) -> bool:
    """Whether :class:`LlamaDecoder` can run ``lm``: a plain Hugging Face Llama (SiLU MLP, no biases, no
    LoRA or other wrapped linears, no hooks inside a layer or outside the layers)."""
    cfg = getattr(lm, "config", None)
    if getattr(cfg, "model_type", None) not in ("llama",) or getattr(cfg, "hidden_act", None) != "silu":
        return False
    trunk = getattr(lm, "model", None)
    layers = getattr(trunk, "layers", None)
    if trunk is None or layers is None or not hasattr(trunk, "rotary_emb") or not hasattr(trunk, "norm"):
        return False
    linears = [lm.get_output_embeddings()]
    for layer in layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if attn is None or mlp is None or _has_hooks(attn) or _has_hooks(mlp) or layer._forward_pre_hooks:
            return False
        linears += [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
    if not all(_plain_linear(m) and not _has_hooks(m) for m in linears):
        return False
    return not (_has_hooks(lm) or _has_hooks(trunk) or _has_hooks(trunk.norm) or _has_hooks(trunk.embed_tokens))


def llama_decoder(lm: nn.Module, batch: int, max_len: int) -> LlamaDecoder | None:
    """A :class:`LlamaDecoder` for ``lm`` with room for ``batch`` rows of ``max_len`` tokens, or None when
    ``lm`` is not :func:`decodable` (the caller then uses the model's own forward pass)."""
    return LlamaDecoder(lm, batch, max_len) if decodable(lm) else None


class LlamaDecoder:
    """Decode steps of a Hugging Face ``LlamaForCausalLM`` over a preallocated KV cache.

    Made per sampling call (the weights are read at construction, so trainable ones must not change
    while it lives). :meth:`prefill` runs the prompt; :meth:`step` feeds one token per row and returns
    the final hidden state (B, C) after the model's last norm, ready for the LM head.
    """

    def __init__(self, lm: nn.Module, batch: int, max_len: int):
        trunk = lm.model
        cfg = lm.config
        self.trunk, self.layers = trunk, list(trunk.layers)
        ref = trunk.layers[0].self_attn.q_proj.weight
        autocast = torch.is_autocast_enabled(ref.device.type)
        self.dtype = torch.get_autocast_dtype(ref.device.type) if autocast else ref.dtype
        self.device = ref.device
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.q_size, self.kv_size = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        cast = self.dtype
        self.w_qkv, self.w_o, self.w_gu, self.w_down = [], [], [], []
        for layer in self.layers:
            a, m = layer.self_attn, layer.mlp
            self.w_qkv.append(_pack([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight], cast, batch))
            self.w_o.append(_pack([a.o_proj.weight], cast, batch))
            self.w_gu.append(_pack([m.gate_proj.weight, m.up_proj.weight], cast, batch))
            self.w_down.append(_pack([m.down_proj.weight], cast, batch))
        self.w_head = _pack([lm.get_output_embeddings().weight], cast, batch)
        self.inter = self.layers[0].mlp.down_proj.weight.shape[1]
        shape = (len(self.layers), batch, self.n_kv, max_len, self.head_dim)
        self.k = torch.zeros(shape, dtype=cast, device=self.device)
        self.v = torch.zeros(shape, dtype=cast, device=self.device)
        self.mask = torch.zeros((batch, 1, 1, max_len), dtype=torch.bool, device=self.device)
        self.length = 0

    @staticmethod
    def _norm(norm: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(h, h.shape[-1:], norm.weight, norm.variance_epsilon)

    def _mlp(self, i: int, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """Layer ``i``'s MLP half on the residual stream ``h`` (N, C), float32: ``h + down(silu(gate) * up)``."""
        gu = self.w_gu[i](self._norm(layer.post_attention_layernorm, h).to(self.dtype))
        return h + self.w_down[i](F.silu(gu[:, : self.inter]) * gu[:, self.inter :]).float()

    @torch.no_grad()
    def prefill(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
    ) -> torch.Tensor:
        """Run the left-padded prompt (B, P) through the layers, filling the KV cache; returns the last
        position's final hidden state (B, C). Each layer's forward hooks see its output (B, P, C)."""
        B, P = input_ids.shape
        G, D, H, KV = self.n_heads // self.n_kv, self.head_dim, self.n_heads, self.n_kv
        qs = self.q_size
        real = attention_mask.bool()
        # causal and padding mask (B, 1, P, P); a padding position attends to itself only, so it stays finite
        allowed = torch.ones(P, P, dtype=torch.bool, device=self.device).tril()[None, None] & real[:, None, None, :]
        allowed |= torch.eye(P, dtype=torch.bool, device=self.device)[None, None]
        h = self.trunk.embed_tokens(input_ids).float()  # (B, P, C)
        cos, sin = self.trunk.rotary_emb(h, position_ids)  # (B, P, D)
        cos, sin = cos.float()[:, :, None], sin.float()[:, :, None]  # (B, P, 1, D): broadcast over heads
        for i, layer in enumerate(self.layers):
            x = self._norm(layer.input_layernorm, h).to(self.dtype).view(B * P, -1)
            qkv = self.w_qkv[i](x).float().view(B, P, H + 2 * KV, D)
            qk = qkv[:, :, : H + KV]
            qk = qk * cos + rotate_half(qk) * sin
            q = qk[:, :, :H].transpose(1, 2).to(self.dtype)  # (B, H, P, D)
            k = qk[:, :, H:].transpose(1, 2).to(self.dtype)  # (B, KV, P, D)
            v = qkv[:, :, H + KV :].transpose(1, 2).to(self.dtype)
            self.k[i, :B, :, :P], self.v[i, :B, :, :P] = k, v
            # (B, H, P, D); enable_gqa: each KV head serves its G query heads without a repeated copy
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=self.scale, enable_gqa=G > 1)
            h = h + self.w_o[i](att.transpose(1, 2).reshape(B * P, qs)).float().view(B, P, -1)
            h = self._mlp(i, layer, h.view(B * P, -1)).view(B, P, -1)
            for hook in layer._forward_hooks.values():
                hook(layer, (h,), h)
        self.mask[:B, 0, 0, :P] = real
        self.length = P
        return self._norm(self.trunk.norm, h[:, -1])

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """The LM head's logits (B, V) in float32 for final hidden states ``h`` (B, C)."""
        return self.w_head(h.to(self.dtype).contiguous()).float()

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` (B,) at ``positions`` (B,); returns the final hidden state (B, C)."""
        B, t = tokens.shape[0], self.length
        self.mask[:, 0, 0, t] = True
        allowed = self.mask[:B, :, :, : t + 1]  # (B, 1, 1, t+1): True where a row has a real token
        h = self.trunk.embed_tokens(tokens).float()  # (B, C): the residual stream, in float32
        cos, sin = self.trunk.rotary_emb(h[:, None], positions[:, None])  # (B, 1, D)
        cos, sin = cos.float().view(B, 1, -1), sin.float().view(B, 1, -1)  # (B, 1, D): broadcast over heads
        G, D, H, KV = self.n_heads // self.n_kv, self.head_dim, self.n_heads, self.n_kv
        qs, ks = self.q_size, self.kv_size
        for i, layer in enumerate(self.layers):
            qkv = self.w_qkv[i](self._norm(layer.input_layernorm, h).to(self.dtype)).float()  # (B, q + 2 kv)
            qk = qkv[:, : qs + ks].view(B, H + KV, D)
            qk = qk * cos + rotate_half(qk) * sin  # the model's rotary embedding, on q and k at once
            q = qk[:, :H].to(self.dtype).view(B, KV, G, D)  # the G query heads of a KV head as G "positions"
            self.k[i, :B, :, t] = qk[:, H:]
            self.v[i, :B, :, t] = qkv[:, qs + ks :].view(B, KV, D)
            keys, values = self.k[i, :B, :, : t + 1], self.v[i, :B, :, : t + 1]  # (B, KV, t+1, D)
            # one fused kernel for q k^T, the mask, the softmax (in float32) and the weighted sum: (B, KV, G, D)
            att = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, scale=self.scale)
            h = h + self.w_o[i](att.reshape(B, qs)).float()
            h = self._mlp(i, layer, h)
            for hook in layer._forward_hooks.values():
                hook(layer, (h[:, None],), h[:, None])
        self.length = t + 1
        return self._norm(self.trunk.norm, h)
