"""Where each component of a pipeline runs, and when its weights move there.

Offload modes (``OFFLOAD_MODES``):

* ``none``: every component stays on its device (the execution device, or its ``device_map`` entry).
* ``model``: components wait on the CPU; each moves to the GPU only while it runs (text and image
  encoders while encoding, then the UNet for the whole denoising loop, then the VAE), so the peak is
  one component's weights plus activations.
* ``sequential``: accelerate's ``cpu_offload`` hooks stream every layer's weights to the GPU as the layer
  runs: the smallest footprint, the slowest mode.

``device_map`` places components on different devices (``{"unet": "cuda:1", "vae": "cuda:0"}``) for cards
too small to hold everything; inputs follow each component and results come back to the execution
device (the UNet's), where the sampler runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from toonctl.device import release_memory, resolve_device

OFFLOAD_MODES = ("none", "model", "sequential")
COMPONENT_NAMES = ("unet", "vae", "text_encoder", "image_encoder", "image_proj")


class ComponentPlacement:
    """Devices of a pipeline's components and the offload policy.

    Args:
        execution_device: where every component not in ``device_map`` runs (and the sampler, unless the
            map moves the UNet elsewhere).
        offload: one of ``OFFLOAD_MODES``.
        device_map: optional per-component devices (keys from ``COMPONENT_NAMES``); not combinable
            with offload.
    """

    def __init__(
        self,
        execution_device: torch.device | str,
        offload: str = "none",
        device_map: Mapping[str, torch.device | str] | None = None,
    ) -> None:
        if offload not in OFFLOAD_MODES:
            raise ValueError(f"unknown offload mode {offload!r}; choose one of {', '.join(OFFLOAD_MODES)}")
        device_map = dict(device_map or {})
        unknown = sorted(set(device_map) - set(COMPONENT_NAMES))
        if unknown:
            raise ValueError(f"unknown components in the device map: {unknown}; known: {', '.join(COMPONENT_NAMES)}")
        if device_map and offload != "none":
            raise ValueError("a device map cannot be combined with offloading")
        self.offload = offload
        self.device_map = {k: torch.device(v) for k, v in device_map.items()}
        self.default_device = torch.device(execution_device)
        # The sampler runs where the UNet is.
        self.execution_device = self.device_map.get("unet", self.default_device)

    def device_for(self, name: str) -> torch.device:
        """A component's device: its device-map entry, else the pipeline's device."""
        return self.device_map.get(name, self.default_device)

    def apply(self, modules: Mapping[str, nn.Module]) -> None:
        """Move (or hook) the modules according to the policy; call once after loading."""
        if self.offload == "sequential":
            from accelerate import cpu_offload

            for module in modules.values():
                module.to("cpu")
                cpu_offload(module, execution_device=self.execution_device)
            return
        for name, module in modules.items():
            module.to("cpu" if self.offload == "model" else self.device_for(name))

    @contextlib.contextmanager
    def use(self, name: str, module: nn.Module) -> Iterator[torch.device]:
        """Run ``module`` inside the block: yields the device its inputs must be on.

        Under ``model`` offload the module moves to the execution device for the block and back to the
        CPU afterwards (also when the block fails).
        """
        device = self.device_for(name)
        if self.offload != "model":
            yield device
            return
        module.to(device)
        try:
            yield device
        finally:
            module.to("cpu")
            release_memory(device)


def parse_device_map(text: str | None) -> dict[str, str]:
    """``"unet=cuda:1,vae=cuda:0"`` -> ``{"unet": "cuda:1", "vae": "cuda:0"}``."""
    if not text:
        return {}
    result = {}
    for item in text.split(","):
        name, sep, device = (part.strip() for part in item.partition("="))
        if not sep or not name or not device:
            raise ValueError(f"device map entries look like component=device, got {item!r}")
        if name not in COMPONENT_NAMES:
            raise ValueError(f"unknown component {name!r} in the device map; known: {', '.join(COMPONENT_NAMES)}")
        result[name] = str(resolve_device(device))  # a CUDA entry on a CPU-only machine is refused here
    return result
