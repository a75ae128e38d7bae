"""The shared frozen trunk ("hydra", after trlx): pay for the frozen layers once per rollout.

With ``num_layers_unfrozen = N`` only the top ``N`` of the ``L`` transformer blocks train. The
bottom ``L - N`` blocks (and the embeddings) never change, so for one rollout their output is
the same in every pass PPO makes over it:

- the old policy's log-probs and values,
- the reference's log-probs,
- every minibatch of every PPO epoch.

:class:`FrozenTrunk` computes that output once (:meth:`FrozenTrunk.hidden`, stopping the
forward pass after the last frozen block), then runs only the top blocks on it
(:meth:`FrozenTrunk.replay`). The reference is the same trunk with a frozen copy of only the top
``N`` blocks and the final norm (:meth:`FrozenTrunk.reference`), not a copy of the whole model. With
LoRA adapters in the top blocks (``adapters_off``) nothing is copied: the reference is those same
blocks with the adapters switched off, and the bottom blocks, which have none, are the start model's.
Sampling already runs the frozen layers over prompt and response, so the rollout keeps their
output from it (:meth:`FrozenTrunk.recording`) and :meth:`FrozenTrunk.hidden` runs only when it
could not (a batch whose every row ended early).

Both work by swapping modules inside the Hugging Face model for the length of a ``with`` block,
so the model's own forward (attention masks, rotary or learned positions) runs unchanged:
the frozen blocks become :class:`_Replay` modules that hand back the cached hidden state.
``tests/test_hydra.py`` checks that log-probs, values and losses equal those of the plain path,
on a tiny GPT-2 and a tiny Llama.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

from rl_finetune.value_head import transformer_blocks

#: Names of the final layer norm that sits after the blocks (GPT-2, Llama, OPT-style).
FINAL_NORMS = ("ln_f", "norm", "final_layer_norm")


class _StopForward(Exception):
    """Raised by the hook on the last frozen block: nothing above it is needed."""


class _Replay(nn.Module):
    """Stands in for a frozen block: returns the cached output of the frozen trunk (the last
    frozen block) or passes its input through (the ones below it, whose work is already in the cache)."""

    def __init__(self, cached: torch.Tensor | None):
        super().__init__()
        self.cached = cached

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states if self.cached is None else self.cached.to(hidden_states.dtype)


def _final_norm_name(lm: nn.Module) -> str | None:
    for name, _ in lm.base_model.named_children():
        if name in FINAL_NORMS:
            return name
    return None


class FrozenTrunk:
    """The frozen bottom of ``lm`` (a Hugging Face causal LM) and a reference branch on top of it.

    ``lm`` must already be frozen below its top ``num_layers_unfrozen`` blocks
    (:func:`rl_finetune.value_head.freeze_bottom`, or LoRA adapters in those blocks only);
    ``0 <= num_layers_unfrozen < L``. ``adapters_off``: with LoRA, a context manager factory that
    switches the adapters off (:meth:`rl_finetune.value_head.LoraAdapters.off`); the reference is then
    the top blocks run inside it, and no copy of them is kept.
    """

    def __init__(
        self,
        lm: nn.Module,
        num_layers_unfrozen: int,
        *,
        adapters_off: Callable[[], contextlib.AbstractContextManager] | None = None,
    ):
        self.lm = lm
        self.blocks = transformer_blocks(lm)
        n_layers = len(self.blocks)
        if not 0 <= num_layers_unfrozen < n_layers:
            raise ValueError(f"num_layers_unfrozen={num_layers_unfrozen} needs 0 <= N < {n_layers} for a shared trunk")
        self.split = n_layers - num_layers_unfrozen  # blocks [0, split) are frozen
        self.norm_name = _final_norm_name(lm)
        self.adapters_off = adapters_off
        # the reference's own top: a frozen copy of the trainable blocks and the final norm (none with LoRA)
        top = [] if adapters_off is not None else list(self.blocks)[self.split :]
        self.ref_blocks = [copy.deepcopy(b).requires_grad_(False) for b in top]
        self.ref_norm = (
            copy.deepcopy(getattr(lm.base_model, self.norm_name)).requires_grad_(False)
            if self.norm_name and adapters_off is None
            else None
        )

    @property
    def num_frozen(self) -> int:
        return self.split

    def to(self, device) -> FrozenTrunk:
        self.ref_blocks = [b.to(device) for b in self.ref_blocks]
        if self.ref_norm is not None:
            self.ref_norm = self.ref_norm.to(device)
        return self

    @torch.no_grad()
    def hidden(self, input_ids, attention_mask, position_ids=None, **_) -> torch.Tensor:
        """The output of the last frozen block for these inputs, (B, T, C); nothing above it is computed."""
        store: dict[str, torch.Tensor] = {}

        def hook(_module, _args, output):
            store["h"] = output[0] if isinstance(output, tuple) else output
            raise _StopForward

        handle = self.blocks[self.split - 1].register_forward_hook(hook)
        try:
            self.lm.base_model(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            )
        except _StopForward:
            pass
        finally:
            handle.remove()
        return store["h"].detach()

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[torch.Tensor]]:
        """Record the last frozen block's output on every forward pass inside the block. Token-by-token
        sampling makes one pass for the prompt and one per token fed back, so the rollout gets the
        frozen trunk's output for free (:meth:`assemble`) instead of paying :meth:`hidden` again."""
        outputs: list[torch.Tensor] = []

        def hook(_module, _args, output):
            outputs.append((output[0] if isinstance(output, tuple) else output).detach())

        handle = self.blocks[self.split - 1].register_forward_hook(hook)
        try:
            yield outputs
        finally:
            handle.remove()

    @staticmethod
    def assemble(outputs: list[torch.Tensor], length: int) -> torch.Tensor | None:
        """The frozen trunk's output (B, ``length``, C) for prompt + response, from a sampling run's
        :meth:`recording`: the prompt pass, then one state per token fed back. The last response token is
        never fed back, and its state is never needed (nothing attends to the last position and its logits
        predict nothing), so that row is zeros. None when the run stopped early (every row ended)."""
        if not outputs:
            return None
        hidden = torch.cat(outputs, dim=1)
        if length - hidden.shape[1] != 1:
            return None
        return torch.cat([hidden, hidden.new_zeros(hidden.shape[0], 1, hidden.shape[2])], dim=1)

    @contextlib.contextmanager
    def replay(self, hidden: torch.Tensor) -> Iterator[None]:
        """Inside the block, a forward pass of ``lm`` (or of a wrapper around it) takes the frozen
        trunk's output from ``hidden`` and runs only the top blocks (with gradients, if enabled)."""
        originals = list(self.blocks)[: self.split]
        for i in range(self.split):
            self.blocks[i] = _Replay(hidden if i == self.split - 1 else None)
        try:
            yield
        finally:
            for i, block in enumerate(originals):
                self.blocks[i] = block

    @contextlib.contextmanager
    def reference(self, hidden: torch.Tensor) -> Iterator[None]:
        """Like :meth:`replay`, with the reference's frozen copy of the top blocks and final norm in
        place of the trained ones (with LoRA: the same blocks, adapters off): a forward pass of ``lm``
        inside it is the reference model's."""
        if self.adapters_off is not None:
            with self.adapters_off(), self.replay(hidden):
                yield
            return
        top = list(self.blocks)[self.split :]
        norm = getattr(self.lm.base_model, self.norm_name) if self.norm_name else None
        for i, block in enumerate(self.ref_blocks):
            self.blocks[self.split + i] = block
        if norm is not None:
            setattr(self.lm.base_model, self.norm_name, self.ref_norm)
        try:
            with self.replay(hidden):
                yield
        finally:
            for i, block in enumerate(top):
                self.blocks[self.split + i] = block
            if norm is not None:
                setattr(self.lm.base_model, self.norm_name, norm)
