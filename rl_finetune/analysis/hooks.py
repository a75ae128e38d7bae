"""The model parts the analysis reads, found on plain ``transformers`` causal LMs, and forward hooks
that record or replace their activations (no TransformerLens).

Two layouts are supported: GPT-2 (``transformer.h[i].attn/.mlp``, heads concatenated before
``attn.c_proj``, ``transformer.ln_f``) and the Llama family (``model.layers[i].self_attn/.mlp``,
heads concatenated before ``self_attn.o_proj``, ``model.norm``), which Mistral and Qwen2 share.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from common.errors import UserError


@dataclass
class Parts:
    """Where a model keeps what the analysis needs."""

    family: str  # "gpt2" or "llama" (the layout)
    blocks: list[nn.Module]
    attn: list[nn.Module]  # output[0] is the attention's contribution to the residual stream
    mlp: list[nn.Module]  # output is the MLP's contribution
    o_proj: list[nn.Module]  # input is the heads' outputs, concatenated
    final_norm: nn.Module
    unembed: nn.Module  # lm_head
    n_heads: int
    head_dim: int

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def head_weights(self, layer: int) -> torch.Tensor:
        """The output projection as (n_heads, head_dim, d_model): head h's output z_h maps to z_h @ W[h]."""
        proj = self.o_proj[layer]
        w = proj.weight if self.family == "gpt2" else proj.weight.T  # GPT-2's Conv1D stores (in, out)
        return w.reshape(self.n_heads, self.head_dim, -1)

    def head_bias(self, layer: int) -> torch.Tensor | None:
        return getattr(self.o_proj[layer], "bias", None)


def parts(model: nn.Module) -> Parts:
    """The :class:`Parts` of a GPT-2 or Llama-family causal LM; a :class:`UserError` for any other layout."""
    cfg = model.config
    if hasattr(model, "transformer") and hasattr(model.transformer, "h"):
        blocks = list(model.transformer.h)
        n_heads = cfg.n_head
        return Parts(
            "gpt2",
            blocks,
            [b.attn for b in blocks],
            [b.mlp for b in blocks],
            [b.attn.c_proj for b in blocks],
            model.transformer.ln_f,
            model.lm_head,
            n_heads,
            cfg.n_embd // n_heads,
        )
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "layers") and hasattr(inner, "norm"):
        blocks = list(inner.layers)
        n_heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
        return Parts(
            "llama",
            blocks,
            [b.self_attn for b in blocks],
            [b.mlp for b in blocks],
            [b.self_attn.o_proj for b in blocks],
            inner.norm,
            model.lm_head,
            n_heads,
            head_dim,
        )
    raise UserError(
        f"the analysis does not know the layout of a {type(model).__name__} ({cfg.model_type}).",
        "use a GPT-2 or a Llama-family causal LM (Llama, SmolLM2, Mistral, Qwen2).",
    )


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def _replace_first(out, new):
    return (new, *out[1:]) if isinstance(out, tuple) else new


@dataclass
class Cache:
    """Activations of one forward pass, each (batch, seq, ...)."""

    embed: torch.Tensor  # residual stream entering block 0
    resid: list[torch.Tensor]  # residual stream after block l
    attn: list[torch.Tensor]  # attention output of block l (what it adds)
    mlp: list[torch.Tensor]
    heads: list[torch.Tensor]  # o_proj input of block l, (batch, seq, n_heads, head_dim)
    logits: torch.Tensor

    def resid_at(self, layer: int) -> torch.Tensor:
        """The residual stream after ``layer`` blocks (0 = the embeddings, n_layers = the final one)."""
        return self.embed if layer == 0 else self.resid[layer - 1]


@torch.no_grad()
def run_with_cache(model: nn.Module, p: Parts, input_ids: torch.Tensor, attention_mask=None) -> Cache:
    """One forward pass with every activation the analysis reads recorded."""
    store: dict[str, list] = {"embed": [], "resid": [], "attn": [], "mlp": [], "heads": []}
    handles = []

    def pre_embed(_mod, args, kwargs):
        store["embed"].append((args[0] if args else kwargs["hidden_states"]).detach())

    def save(key, fn=_first):
        return lambda _mod, _inp, out: store[key].append(fn(out).detach())

    def save_heads(_mod, args):
        z = args[0]
        store["heads"].append(z.detach().reshape(*z.shape[:-1], p.n_heads, p.head_dim))

    try:
        handles.append(p.blocks[0].register_forward_pre_hook(pre_embed, with_kwargs=True))
        for i in range(p.n_layers):
            handles.append(p.blocks[i].register_forward_hook(save("resid")))
            handles.append(p.attn[i].register_forward_hook(save("attn")))
            handles.append(p.mlp[i].register_forward_hook(save("mlp")))
            handles.append(p.o_proj[i].register_forward_pre_hook(save_heads))
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    finally:
        for h in handles:
            h.remove()
    return Cache(store["embed"][0], store["resid"], store["attn"], store["mlp"], store["heads"], logits.detach())


@contextlib.contextmanager
def patched(p: Parts, source: Cache, *, kind: str, layers, positions=None, head: int | None = None) -> Iterator[None]:
    """While active, the model of ``p`` has its ``kind`` activation ("resid", "attn", "mlp" or "head")
    of ``layers`` replaced by ``source``'s at ``positions`` (all when None; for "head", only head ``head``)."""
    pos = slice(None) if positions is None else positions
    handles = []

    def out_hook(layer):
        def hook(_mod, _inp, out):
            new = _first(out).clone()
            new[:, pos] = getattr(source, kind)[layer][:, pos]
            return _replace_first(out, new)

        return hook

    def head_hook(layer):
        def hook(_mod, args):
            z = args[0].clone()
            z = z.reshape(*z.shape[:-1], p.n_heads, p.head_dim)
            z[:, pos, head] = source.heads[layer][:, pos, head]
            return (z.reshape(*z.shape[:-2], -1), *args[1:])

        return hook

    modules = {"resid": p.blocks, "attn": p.attn, "mlp": p.mlp}
    try:
        for layer in layers:
            if kind == "head":
                handles.append(p.o_proj[layer].register_forward_pre_hook(head_hook(layer)))
            else:
                handles.append(modules[kind][layer].register_forward_hook(out_hook(layer)))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def patched_rows(p: Parts, source: Cache, *, kind: str, rows: list[tuple[int, int, int | None]]) -> Iterator[None]:
    """One patch per batch row, for a batch of ``len(rows)`` copies of ``source``'s prompt: row r has
    its ``kind`` activation of layer ``rows[r][0]`` at position ``rows[r][1]`` (for "head", only head
    ``rows[r][2]``) replaced by ``source``'s. A sweep of single patches in one forward pass."""
    by_layer: dict[int, tuple[list[int], list[int], list[int]]] = {}
    for r, (layer, pos, head) in enumerate(rows):
        idx = by_layer.setdefault(layer, ([], [], []))
        idx[0].append(r), idx[1].append(pos), idx[2].append(0 if head is None else head)
    handles = []

    def out_hook(layer, r, t):
        def hook(_mod, _inp, out):
            new = _first(out).clone()
            new[r, t] = getattr(source, kind)[layer][0, t]
            return _replace_first(out, new)

        return hook

    def head_hook(layer, r, t, h):
        def hook(_mod, args):
            z = args[0].clone()
            z = z.reshape(*z.shape[:-1], p.n_heads, p.head_dim)  # (batch, seq, n_heads, head_dim)
            z[r, t, h] = source.heads[layer][0, t, h]
            return (z.reshape(*z.shape[:-2], -1), *args[1:])

        return hook

    modules = {"resid": p.blocks, "attn": p.attn, "mlp": p.mlp}
    try:
        for layer, (r, t, h) in by_layer.items():
            r, t, h = torch.tensor(r), torch.tensor(t), torch.tensor(h)
            if kind == "head":
                handles.append(p.o_proj[layer].register_forward_pre_hook(head_hook(layer, r, t, h)))
            else:
                handles.append(modules[kind][layer].register_forward_hook(out_hook(layer, r, t)))
        yield
    finally:
        for h in handles:
            h.remove()
