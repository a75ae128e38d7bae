"""A causal LM with a scalar value head on its trunk: one forward pass yields logits and values.

The value head is a ``Linear(hidden, 1)`` initialised to zero (Huang et al. 2023), read from the
trunk's last hidden state (after the final layer norm). It is saved beside the model as
``value_head.safetensors``, so ``AutoModelForCausalLM.from_pretrained(dir)`` still loads a plain model.

Which parameters train: :func:`freeze_bottom` (trlx's ``num_layers_unfrozen``), or
:class:`LoraAdapters` (peft's LoRA in those same top blocks; everything else frozen).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

VALUE_HEAD_FILE = "value_head.safetensors"


def hidden_size(config) -> int:
    for name in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot find the hidden size in {type(config).__name__}")


def transformer_blocks(lm: nn.Module) -> nn.ModuleList:
    """The list of transformer blocks of a causal LM (GPT-2's ``transformer.h``, Llama's ``model.layers``...)."""
    n = getattr(lm.config, "num_hidden_layers", None) or getattr(lm.config, "n_layer", None)
    for module in lm.base_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ValueError(f"cannot find the {n} transformer blocks of {type(lm).__name__}")


class PolicyWithValueHead(nn.Module):
    """``forward(input_ids, attention_mask, position_ids, start)`` -> (logits, values) for positions ``start:-1``.

    Only the positions that predict response tokens are projected through the LM head (the
    prompt's logits are never needed), which saves a good share of the compute for small models
    with large vocabularies.
    """

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.v_head = nn.Linear(hidden_size(lm.config), 1)
        nn.init.zeros_(self.v_head.weight)
        nn.init.zeros_(self.v_head.bias)

    @property
    def trunk(self) -> nn.Module:
        return self.lm.base_model

    @property
    def lm_head(self) -> nn.Module:
        return self.lm.get_output_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        start: int = 0,
        with_values: bool = True,
    ):
        out = self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        h = out.last_hidden_state[:, start:-1]  # (B, T, C): states that predict tokens start+1..
        logits = self.lm_head(h)  # (B, T, V)
        values = self.v_head(h).squeeze(-1) if with_values else None  # (B, T)
        return logits, values

    def save_value_head(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file(
            {k: v.detach().float().contiguous().cpu() for k, v in self.v_head.state_dict().items()},
            str(Path(directory) / VALUE_HEAD_FILE),
        )

    def load_value_head(self, directory: Path) -> bool:
        path = Path(directory) / VALUE_HEAD_FILE
        if not path.is_file():
            return False
        from safetensors.torch import load_file

        self.v_head.load_state_dict(load_file(str(path)))
        return True


def freeze_bottom(lm: nn.Module, num_layers_unfrozen: int) -> int:
    """trlx's ``num_layers_unfrozen``: with N >= 0 train only the top N blocks and the final norm
    (embeddings, and the LM head when it is tied to them, stay frozen). Returns the trainable parameter count."""
    if num_layers_unfrozen >= 0:
        for p in lm.parameters():
            p.requires_grad_(False)
        blocks = transformer_blocks(lm)
        keep = list(blocks)[len(blocks) - num_layers_unfrozen :] if num_layers_unfrozen > 0 else []
        for block in keep:
            for p in block.parameters():
                p.requires_grad_(True)
        # the final layer norm sits after the blocks (GPT-2: ln_f, Llama: norm)
        for name, module in lm.base_model.named_children():
            if name in ("ln_f", "norm", "final_layer_norm") and num_layers_unfrozen > 0:
                for p in module.parameters():
                    p.requires_grad_(True)
    return sum(p.numel() for p in lm.parameters() if p.requires_grad)


# ------------------------------------------------------------------ LoRA (peft)


def _is_matmul(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's Conv1D is a transposed Linear


def trainable_block_indices(lm: nn.Module, num_layers_unfrozen: int) -> list[int]:
    """The indices of the top ``num_layers_unfrozen`` blocks (-1: all of them)."""
    n = len(transformer_blocks(lm))
    return list(range(n - num_layers_unfrozen if 0 <= num_layers_unfrozen <= n else 0, n))


def lora_candidates(lm: nn.Module, num_layers_unfrozen: int) -> dict[str, nn.Module]:
    """The matmul layers (``nn.Linear``, GPT-2's ``Conv1D``) inside the trainable blocks, by their name in ``lm``."""
    blocks = transformer_blocks(lm)
    prefix = next(name for name, module in lm.named_modules() if module is blocks)
    out = {}
    for i in trainable_block_indices(lm, num_layers_unfrozen):
        for name, module in blocks[i].named_modules():
            if name and _is_matmul(module):
                out[f"{prefix}.{i}.{name}"] = module
    return out


def default_lora_targets(lm: nn.Module) -> list[str]:
    """Every matmul layer of a block, by its own name, in block order: GPT-2 ``c_attn, c_proj, c_fc``;
    Llama ``q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj``."""
    return list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in lora_candidates(lm, -1)))


def unmatched_lora_targets(lm: nn.Module, targets: Sequence[str], num_layers_unfrozen: int) -> list[str]:
    """The ``targets`` that name no matmul layer in the trainable blocks (peft's rule: a layer's full
    name equals the target or ends with ``.<target>``)."""
    names = list(lora_candidates(lm, num_layers_unfrozen))
    return [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names)]


class LoraAdapters:
    """peft's LoRA adapters on the layers named ``targets`` (None: :func:`default_lora_targets`) of the
    top ``num_layers_unfrozen`` blocks (-1: all; peft's ``layers_to_transform``). Only the adapters train
    (``B`` starts at zero, so the adapted model starts as the model itself).

    ``lm`` is changed in place and keeps its own forward pass, ``base_model`` and LM head, so
    :class:`PolicyWithValueHead` and the frozen trunk (:mod:`rl_finetune.hydra`) work on it unchanged.
    :meth:`off` is the start model (the PPO reference, no copy kept), :meth:`dropout` turns the adapters'
    dropout on (``lm`` stays in ``eval()``), and :meth:`merged` is a plain Hugging Face copy with the
    adapters merged into its weights. Check ``targets`` first with :func:`unmatched_lora_targets`.
    """

    def __init__(
        self,
        lm: nn.Module,
        *,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        targets: Sequence[str] | None = None,
        num_layers_unfrozen: int = -1,
    ):
        from peft import LoraConfig, get_peft_model

        targets = list(targets) if targets is not None else default_lora_targets(lm)
        blocks = transformer_blocks(lm)
        pattern = next(name for name, module in lm.named_modules() if module is blocks).rsplit(".", 1)[-1]
        candidates = lora_candidates(lm, num_layers_unfrozen).items()
        chosen = [m for n, m in candidates if any(n == t or n.endswith(f".{t}") for t in targets)]
        config = LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=targets,
            layers_to_transform=trainable_block_indices(lm, num_layers_unfrozen),
            layers_pattern=pattern,  # "h" (GPT-2), "layers" (Llama): the index after it is the block's
            fan_in_fan_out=any(type(m).__name__ == "Conv1D" for m in chosen),  # GPT-2 stores W transposed
            bias="none",
        )
        self.targets = targets
        self.peft = get_peft_model(lm, config)
        lm.eval()  # peft's new dropout modules start in training mode
        self.n_trainable = sum(p.numel() for p in lm.parameters() if p.requires_grad)

    def off(self) -> contextlib.AbstractContextManager:
        """Inside the block the adapters are off: ``lm`` is the start model. (peft also marks the adapter
        weights frozen meanwhile, ``requires_grad=False``, and back afterwards.)"""
        return self.peft.disable_adapter()

    @contextlib.contextmanager
    def dropout(self) -> Iterator[None]:
        """The adapters' dropout is on inside the block (the rest of ``lm`` stays in ``eval()``)."""
        drops = [m for name, m in self.peft.named_modules() if name.endswith("lora_dropout")]
        for m in drops:
            m.train()
        try:
            yield
        finally:
            for m in drops:
                m.eval()

    def merged(self) -> nn.Module:
        """A plain Hugging Face causal LM: a copy of ``lm`` with ``W + (alpha / r) B A`` in place of each
        adapted weight (peft's ``merge_and_unload``); ``lm`` itself keeps its adapters."""
        return copy.deepcopy(self.peft).merge_and_unload().eval()
