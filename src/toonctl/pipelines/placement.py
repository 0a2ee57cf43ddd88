"""Where each component of a pipeline runs, and when its weights move there.

Offload modes (``OFFLOAD_MODES``):

* ``none``: every component stays on its device (the execution device, or its ``device_map`` entry).
* ``model``: accelerate's ``cpu_offload_with_hook``: components wait on the CPU; each moves to the GPU only
  while it runs (text and image encoders while encoding, then the UNet and the control stages for the whole
  denoising loop, then the VAE), so the peak is one component's weights plus activations.
* ``sequential``: accelerate's ``cpu_offload`` hooks stream every layer's weights to the GPU as the layer
  runs: the smallest footprint, the slowest mode.

``device_map`` places components on different devices (``{"unet": "cuda:1", "vae": "cuda:0"}``) for cards
too small to hold everything; inputs follow each component and results come back to the execution
device (the UNet's), where the sampler runs.

The names are ``toonctl.presets.COMPONENT_NAMES``: the model's networks and the control stages alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from toonctl.device import release_memory, resolve_device
from toonctl.errors import OptionError
from toonctl.presets import COMPONENT_NAMES, OFFLOAD_MODES


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
            raise OptionError(
                f"unknown offload mode {offload!r}; choose one of {', '.join(OFFLOAD_MODES)}", option="offload"
            )
        device_map = dict(device_map or {})
        unknown = sorted(set(device_map) - set(COMPONENT_NAMES))
        if unknown:
            known = ", ".join(COMPONENT_NAMES)
            raise OptionError(f"unknown components in the device map: {unknown}; known: {known}", option="device_map")
        if device_map and offload != "none":
            raise OptionError("a device map cannot be combined with offloading", option="device_map")
        self.offload = offload
        self.device_map = {k: torch.device(v) for k, v in device_map.items()}
        self.default_device = torch.device(execution_device)
        # The sampler runs where the UNet is.
        self.execution_device = self.device_map.get("unet", self.default_device)
        self._hooks: dict[str, object] = {}  # model offload: accelerate's hook of each component

    def device_for(self, name: str) -> torch.device:
        """A component's device: its device-map entry, else the pipeline's device."""
        return self.device_map.get(name, self.default_device)

    def apply(self, modules: Mapping[str, nn.Module]) -> None:
        """Move (or hook) the modules according to the policy; call once after loading, and for each
        component added later (a control stage)."""
        if self.offload == "sequential":
            from accelerate import cpu_offload

            for module in modules.values():
                module.to("cpu")
                cpu_offload(module, execution_device=self.execution_device)
        elif self.offload == "model":
            from accelerate import cpu_offload_with_hook

            for name, module in modules.items():
                _, self._hooks[name] = cpu_offload_with_hook(module.to("cpu"), self.device_for(name))
        else:
            for name, module in modules.items():
                module.to(self.device_for(name))

    def forget(self, *names: str) -> None:
        """Drop the offload hooks of components the pipeline released (so their weights can be freed)."""
        for name in names:
            hook = self._hooks.pop(name, None)
            if hook is not None:
                hook.remove()

    @contextlib.contextmanager
    def use(self, name: str, module: nn.Module) -> Iterator[torch.device]:
        """Run ``module`` inside the block: yields the device its inputs must be on.

        Under ``model`` offload the module's hook moves it to the execution device for the block (also for
        methods other than ``forward``, such as the VAE's ``encode``/``decode``) and offloads it to the CPU
        afterwards (also when the block fails).
        """
        device = self.device_for(name)
        hook = self._hooks.get(name)
        if hook is None:
            yield device
            return
        hook.hook.pre_forward(module)
        try:
            yield device
        finally:
            hook.offload()
            release_memory(device)

    @contextlib.contextmanager
    def use_all(self, modules: Mapping[str, nn.Module]) -> Iterator[dict[str, torch.device]]:
        """``use`` for several components at once (the UNet and its control stages): yields their devices."""
        with contextlib.ExitStack() as stack:
            yield {name: stack.enter_context(self.use(name, module)) for name, module in modules.items()}


def parse_device_map(text: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"unet=cuda:1,vae=cuda:0"`` (or the same as a mapping) -> ``{"unet": "cuda:1", "vae": "cuda:0"}``."""
    if not text:
        return {}
    if isinstance(text, Mapping):
        text = ",".join(f"{k}={v}" for k, v in text.items())
    result = {}
    for item in text.split(","):
        name, sep, device = (part.strip() for part in item.partition("="))
        if not sep or not name or not device:
            raise OptionError(f"device map entries look like component=device, got {item!r}", option="device_map")
        if name not in COMPONENT_NAMES:
            known = ", ".join(COMPONENT_NAMES)
            raise OptionError(f"unknown component {name!r} in the device map; known: {known}", option="device_map")
        result[name] = str(resolve_device(device))  # a CUDA entry on a CPU-only machine is refused here
    return result
