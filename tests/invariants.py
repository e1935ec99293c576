"""Snapshot a model's observable state and check nothing changed (docs/architecture.md, invariant 1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelState:
    hooks: dict[str, tuple[int, ...]]
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor, bool]]
    training: dict[str, bool]
    grads: dict[str, torch.Tensor | None]


def _hook_counts(module: nn.Module) -> tuple[int, ...]:
    return (
        len(module._forward_hooks),
        len(module._forward_pre_hooks),
        len(module._backward_hooks),
        len(module._backward_pre_hooks),
        len(module._state_dict_hooks),
        len(module._load_state_dict_pre_hooks),
    )


def global_hook_counts() -> tuple[int, ...]:
    from torch.nn.modules import module as mod

    return (
        len(mod._global_forward_hooks),
        len(mod._global_forward_pre_hooks),
        len(mod._global_backward_hooks),
        len(mod._global_backward_pre_hooks),
    )


def snapshot(model: nn.Module) -> ModelState:
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return ModelState(
        hooks={name: _hook_counts(m) for name, m in model.named_modules()},
        tensors={name: (t, t.detach().clone(), t.requires_grad) for name, t in named},
        training={name: m.training for name, m in model.named_modules()},
        grads={name: (None if p.grad is None else p.grad.clone()) for name, p in model.named_parameters()},
    )


def assert_unchanged(model: nn.Module, before: ModelState) -> None:
    after = snapshot(model)
    assert after.hooks == before.hooks, "hooks left behind"
    assert after.training == before.training, "training flags changed"
    assert after.tensors.keys() == before.tensors.keys()
    for name, (tensor, value, requires_grad) in before.tensors.items():
        now, _, now_requires_grad = after.tensors[name]
        assert now is tensor, f"{name} was replaced"
        assert now_requires_grad == requires_grad, f"{name}.requires_grad changed"
        if now.is_meta:  # no data to compare: shape and dtype only
            assert (now.shape, now.dtype) == (value.shape, value.dtype), f"{name} changed"
        else:
            assert torch.equal(now.detach(), value), f"{name} changed value"
    for name, grad in before.grads.items():
        now_grad = after.grads[name]
        assert (grad is None) == (now_grad is None), f"{name}.grad appeared or vanished"
        if grad is not None and now_grad is not None:
            assert torch.equal(grad, now_grad), f"{name}.grad changed"
