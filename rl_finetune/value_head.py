"""A causal LM with a scalar value head on its trunk: one forward pass yields logits and values.

The value head is a ``Linear(hidden, 1)`` initialised to zero (Huang et al. 2023), read from the
trunk's last hidden state (after the final layer norm). It is saved beside the model as
``value_head.safetensors``, so ``AutoModelForCausalLM.from_pretrained(dir)`` still loads a plain model.
"""

from __future__ import annotations

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
