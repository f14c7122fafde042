"""Memory figures of one measurement: parameters, tensors saved for backward, device peak.

- :func:`param_bytes`: the bytes of a model's parameters.
- :func:`saved_tensor_bytes`: the bytes autograd keeps for the backward pass of one
  forward, counted with saved-tensor hooks on every device. Each storage counts once
  (views of one tensor share it) and the parameters' own storages are left out: they
  are held anyway and counted by :func:`param_bytes`.
- :class:`DeviceMemory`: the peak allocated bytes on CUDA since :meth:`~DeviceMemory.reset`,
  the bytes currently allocated on MPS (MPS keeps no peak), nothing on the CPU.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch


def param_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the parameters of ``model``."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def parameter_count(model: torch.nn.Module) -> int:
    """Trainable scalars of ``model`` (as ``kan.zoo.parameter_count``, without importing a ``kan``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def saved_tensor_bytes(forward: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages that autograd saves while ``forward()`` runs.

    ``exclude``: tensors (the parameters) whose storages are not counted.
    """
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())


class DeviceMemory:
    """Allocated device memory during a measurement (``None`` where the device tells none)."""

    def __init__(self, device: str | torch.device):
        self.kind = torch.device(device).type
        self.device = torch.device(device)

    def reset(self) -> None:
        """Start a new peak (CUDA); call right before the measured phase."""
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> int | None:
        """CUDA: peak bytes allocated since :meth:`reset`; MPS: bytes allocated now; CPU: None."""
        if self.kind == "cuda":
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        if self.kind == "mps":
            torch.mps.synchronize()
            return int(torch.mps.current_allocated_memory())
        return None
