"""A folder of VAE posteriors, one file per frame, so the frozen VAE encodes each training frame once.

``toonctl train unet --cache-latents DIR``. The official objective encodes every frame on its own
(``toonctl.training.objective.encode_posterior``); a frame's posterior therefore depends only on its fitted
pixels and the VAE, and that is the key:

    key = sha256(VAE identity ‖ frame shape ‖ the frame's float32 bytes, after resize/crop)
    VAE identity = sha256(VAE config ‖ VAE dtype ‖ every encoder and quant_conv tensor)

so another VAE (other weights, config or precision) never reuses a file. The value is the frame's
``(mean, std)``, each ``(4, h, w)`` float32, in ``DIR/<key[:2]>/<key>.safetensors``, written atomically
(``toonctl.io.atomic``: temporary names carry the pid, so several processes may write the same file safely).
The cached tensors are the very ones the encode returns, so a loss computed from the cache equals the loss
without it bit for bit. An unreadable file counts as a miss and is rewritten.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from toonctl.io.atomic import write_bytes_atomic
from toonctl.training.objective import encode_posterior


def vae_identity(vae: torch.nn.Module, config) -> str:
    """sha256 of the VAE's config, dtype and encoder-side tensors (``encoder.*``, ``quant_conv.*``)."""
    digest = hashlib.sha256(repr(config).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        if name.startswith(("encoder.", "quant_conv.")):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(_tensor_bytes(tensor))
    return digest.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The raw bytes of ``tensor`` on the CPU (any dtype, bf16 included)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes()


class LatentCache:
    """Posteriors of ``pipe.vae`` cached per frame in ``folder`` (see the module docstring).

    Attributes:
        folder: the cache folder (created on the first write).
        hits, misses: frames served from the folder / encoded since construction.
    """

    def __init__(self, folder: str | Path, pipe) -> None:
        self.folder = Path(folder)
        self.identity = vae_identity(pipe.vae, pipe.config.vae)
        self.hits = 0
        self.misses = 0

    def key(self, frame: torch.Tensor) -> str:
        """The cache key of one frame ``(3, H, W)`` as the VAE sees it (float32 pixels in [-1, 1])."""
        digest = hashlib.sha256(self.identity.encode())
        digest.update(repr(tuple(frame.shape)).encode())
        digest.update(_tensor_bytes(frame.to(torch.float32)))
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def posterior(self, pipe, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode_posterior(pipe, video)`` with cached frames read and only the misses encoded (and written).

        Args:
            video: ``(B, 3, T, H, W)`` in [-1, 1].

        Returns:
            ``(mean, std)``, each ``(B, T, 4, h, w)`` float32 on the VAE's device.
        """
        device = next(pipe.vae.parameters()).device
        b, _, t = video.shape[:3]
        frames = video.transpose(1, 2).reshape(b * t, 3, *video.shape[-2:])  # (B*T, 3, H, W), batch-major
        means: list[torch.Tensor] = []
        stds: list[torch.Tensor] = []
        for frame in frames:
            key = self.key(frame)
            cached = self._read(self.path(key))
            if cached is None:
                mean, std = encode_posterior(pipe, frame[None, :, None])  # (1, 1, 4, h, w): one frame, as officially
                mean, std = mean[0, 0], std[0, 0]
                write_bytes_atomic(self.path(key), save_safetensors({"mean": mean.cpu(), "std": std.cpu()}))
                self.misses += 1
            else:
                mean, std = cached[0].to(device), cached[1].to(device)
                self.hits += 1
            means.append(mean)
            stds.append(std)
        mean = torch.stack(means).reshape(b, t, *means[0].shape)
        std = torch.stack(stds).reshape(b, t, *stds[0].shape)
        return mean, std

    @staticmethod
    def _read(path: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
        try:
            tensors = load_safetensors(path.read_bytes())
            return tensors["mean"], tensors["std"]
        except Exception:  # missing or damaged (OSError, SafetensorError, KeyError): a miss
            return None
