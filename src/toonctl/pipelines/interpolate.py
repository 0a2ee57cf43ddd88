"""Key-frame interpolation: two key drawings + a prompt -> the in-between video.

Reimplements ``scripts/evaluation/inference.py::image_guided_synthesis`` with ``--interp`` (and the
model side in ``lvdm/models/ddpm3d.py``): the same conditioning, sampler and double decode, with
every random draw injectable so a run can be replayed exactly. Tensors in, tensors out: no file I/O,
no printing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from toonctl.device import release_memory
from toonctl.errors import OptionError, UnsupportedSizeError
from toonctl.memory import available_memory
from toonctl.models.configs import ToonCrafterConfig
from toonctl.numerics import check_finite
from toonctl.pipelines.controls import combine_controls
from toonctl.pipelines.decoders import DECODERS, FrameDecoder, fit_to_memory, without_splice
from toonctl.pipelines.placement import ComponentPlacement
from toonctl.presets import DEFAULT_DECODER, MODEL_COMPONENTS, LoadOptions
from toonctl.samplers.ddim import make_ddim_schedule, sample_ddim
from toonctl.samplers.guidance import Conditioning, ControlStage, GuidedDenoiser


@dataclass
class InterpolationNoise:
    """Every random draw of one interpolation, in the order the official code makes them.

    Attributes:
        posterior: ``(2, 4, h, w)`` noise of the VAE posterior sample of the first and the last key
            frame. A ``(T, 4, h, w)`` tensor (the official code draws one row per video frame) is
            accepted too; only rows 0 and T-1 are used.
        x_T: ``(1, 4, T, h, w)`` the initial latent.
        steps: one ``(1, 4, T, h, w)`` tensor per DDIM step (drawn even when eta = 0).
    """

    posterior: torch.Tensor
    x_T: torch.Tensor
    steps: Sequence[torch.Tensor]

    @classmethod
    def draw(
        cls,
        *,
        num_frames: int,
        latent_hw: tuple[int, int],
        num_steps: int,
        generator: torch.Generator | None = None,
        latent_channels: int = 4,
    ) -> InterpolationNoise:
        """Draw all noise from ``generator`` (CPU by default), in the official order."""
        h, w = latent_hw
        shape = (1, latent_channels, num_frames, h, w)

        def randn(*size: int) -> torch.Tensor:
            device = generator.device if generator is not None else "cpu"
            return torch.randn(size, generator=generator, device=device, dtype=torch.float32)

        posterior = randn(2, latent_channels, h, w)
        x_T = randn(*shape)
        return cls(posterior=posterior, x_T=x_T, steps=[randn(*shape) for _ in range(num_steps)])


@dataclass
class SegmentConditions:
    """What one segment needs from the encoders (so encoders can be released before sampling).

    Attributes:
        text: ``(2, 77, C)`` the prompt and the empty prompt.
        image: ``(2, N_img, C)`` the first key frame and a zero image, after the Resampler.
        keyframes: the VAE encoder output of the two key frames (posterior and hidden states).
    """

    text: torch.Tensor
    image: torch.Tensor
    keyframes: object


@dataclass
class InterpolationOutput:
    """``video``: ``(1, 3, T, H, W)`` float32, about [-1, 1] (not clamped); ``latents``:
    ``(1, 4, T, h, w)`` the sampled latent in model space."""

    video: torch.Tensor
    latents: torch.Tensor


class InterpolationPipeline:
    """ToonCrafter's interpolation model: UNet, dual-reference VAE, CLIP towers, Resampler, schedule.

    Build it with ``from_checkpoint`` (official ``model.ckpt`` or an official-layout safetensors).
    Each component can also be run on its own: ``encode_text``, ``encode_image``,
    ``encode_keyframes``, ``decode_latents`` and ``unet``.
    """

    # The stage ``decode_latents`` uses; ``from_checkpoint`` sets it from ``LoadOptions.decoder``.
    decoder: FrameDecoder = DECODERS[DEFAULT_DECODER]
    # On the first call, map the UNet's and VAE's memory-mapped weights in from a thread while the encoders
    # run (``toonctl.mapped_weights``); a no-op for weights in private memory.
    prefetch_weights: bool = True
    # Decode the per-frame layers a few frames at a time when the whole clip would not fit in the free memory
    # (``decoders.fit_to_memory``); False always decodes every frame in one call.
    fit_decode_to_memory: bool = True
    _prefetch = None

    def __init__(
        self,
        *,
        unet: nn.Module,
        vae: nn.Module,
        text_encoder: nn.Module,
        image_encoder: nn.Module,
        image_proj: nn.Module,
        schedule: dict[str, torch.Tensor],
        config: ToonCrafterConfig,
        tokenizer=None,
    ) -> None:
        from toonctl.models.tokenizer import CLIPTokenizer

        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.image_proj = image_proj
        self.controls: dict[str, nn.Module] = {}  # control stages (``pipelines/controls.py``), by name
        self.schedule = schedule
        self.config = config
        self.tokenizer = tokenizer or CLIPTokenizer()
        self.placement = ComponentPlacement(next(unet.parameters()).device)
        self.autocast_dtype: torch.dtype | None = None  # e.g. float16: the official regime (fp32 weights)

    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path | None = None,
        config: str | Path | ToonCrafterConfig | None = None,
        *,
        options: LoadOptions | None = None,
        **overrides,
    ) -> InterpolationPipeline:
        """Load every component from an official-layout checkpoint or a converted folder, ready to run.

        Args:
            checkpoint: ``model.ckpt`` or ``.safetensors`` with the official keys, or a folder written by
                ``toonctl weights convert``; None: ``options.weights``, else found in the weights folder.
            config: an official-format yaml, our ``config.json``, a ``ToonCrafterConfig``, or None: the
                converted folder's own config, else a ``config.yaml``/``config.json`` beside the file,
                else the released ToonCrafter-512 architecture.
            options: how to load (``toonctl.presets.LoadOptions``: device, dtype, decoder, offload, device
                map, attention backend, compile, control stages, LoRA adapters merged into the UNet). Default: on
                the CPU in float32 (a converted folder in its stored dtype), the official decoder, the attention
                backend as it is.
            overrides: ``LoadOptions`` fields replacing those of ``options``, e.g. ``device="cuda"``,
                ``dtype=torch.float16``, ``offload="model"``, ``device_map={"vae": "cuda:1"}``.

        Raises:
            OptionError: a bad option value (see ``pipelines.loading.plan_load``).
        """
        from dataclasses import replace

        from toonctl.models.attention import set_attention_backend
        from toonctl.pipelines.controls import load_control
        from toonctl.pipelines.loading import LIBRARY_DEFAULTS, plan_load
        from toonctl.weights import load_weights

        plan = plan_load(replace(options or LIBRARY_DEFAULTS, **overrides), checkpoint, config)
        if plan.attention is not None:
            set_attention_backend(plan.attention)
        load_device = plan.device if plan.direct else "cpu"
        parts = load_weights(plan.checkpoint, plan.config, device=load_device, dtype=plan.dtype)
        pipe = cls(config=plan.config, **parts)  # type: ignore[arg-type]
        pipe.decoder = plan.decoder
        pipe.autocast_dtype = plan.autocast
        dtype = next(pipe.unet.parameters()).dtype
        for name, path in plan.controls.items():
            pipe.controls[name] = load_control(name, path, plan.config, device=load_device, dtype=dtype)
        if plan.loras:
            from toonctl.pipelines.lora import merge_lora_files

            merge_lora_files(pipe.unet, list(plan.loras))
        if not plan.direct:
            pipe.set_placement(plan.device, offload=plan.offload, device_map=plan.device_map)
        if plan.compile:
            pipe.unet = torch.compile(pipe.unet)
        return pipe

    def set_placement(
        self, device: torch.device | str, *, offload: str = "none", device_map: dict[str, str] | None = None
    ) -> None:
        """Choose where components run: ``offload`` ``none``/``model``/``sequential`` and an optional
        per-component ``device_map`` (see ``toonctl.pipelines.placement``)."""
        self.placement = ComponentPlacement(device, offload=offload, device_map=device_map)
        self.placement.apply(self.components())

    def add_control(self, name: str, module: nn.Module) -> None:
        """Hold control network ``name`` (``pipelines/controls.py``), placed like the other components."""
        self.controls[name] = module
        self.placement.apply({name: module})

    def components(self) -> dict[str, nn.Module]:
        """Every network the pipeline holds, by component name (``presets.COMPONENT_NAMES``)."""
        modules = {n: getattr(self, n) for n in MODEL_COMPONENTS}
        return {**{n: m for n, m in modules.items() if m is not None}, **self.controls}

    _components = components  # the earlier private name, which training code calls

    def release_encoders(self) -> None:
        """Drop the text and image encoders (e.g. once every segment's conditions are computed).

        Their pages of a memory-mapped checkpoint are unmapped too (``mapped_weights.release``): ~3.9 GB of
        the full-size model that would otherwise count towards the process until it ends."""
        from toonctl.mapped_weights import release

        released = [m for m in (self.text_encoder, self.image_encoder, self.image_proj) if m is not None]
        self.placement.forget("text_encoder", "image_encoder", "image_proj")
        self.text_encoder = self.image_encoder = self.image_proj = None
        release(released)
        release_memory(self.device)

    # -- components ---------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The execution device: where the sampler and, unless placed elsewhere, the components run."""
        return self.placement.execution_device

    @property
    def latent_factor(self) -> int:
        """Pixel sides must be multiples of this (64 for the 512 model)."""
        return latent_factor(self.config)

    @torch.no_grad()
    def encode_text(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Prompts -> ``(B, 77, C)``: OpenCLIP penultimate-layer tokens after ``ln_final``."""
        tokens = self.tokenizer([prompts] if isinstance(prompts, str) else list(prompts))
        encoder = _require(self.text_encoder, "text encoder")
        with self.placement.use("text_encoder", encoder) as device:
            return encoder(tokens.to(device)).float().to(self.device)

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> ``(B, num_queries * video_length, C)`` image context.

        CLIP preprocessing (antialiased bicubic squash to 224, CLIP mean/std), the ViT's 257 tokens,
        then the Resampler.
        """
        from toonctl.models.clip_encoders import preprocess_clip_image

        encoder = _require(self.image_encoder, "image encoder")
        proj = _require(self.image_proj, "image projector")
        with self.placement.use("image_encoder", encoder) as device:
            pixels = preprocess_clip_image(images.to(device, torch.float32))
            tokens = encoder(pixels.to(_dtype(encoder)))
        with self.placement.use("image_proj", proj) as device:
            return proj(tokens.to(device, _dtype(proj))).float().to(self.device)

    @torch.no_grad()
    def encode_keyframes(self, frames: torch.Tensor):
        """``(N, 3, H, W)`` in [-1, 1] -> the VAE encoder output (posterior + hidden states)."""
        with self.placement.use("vae", self.vae) as device:
            return self.vae.encode(frames.to(device, _dtype(self.vae)))

    @torch.no_grad()
    def decode_latents(
        self,
        latents: torch.Tensor,
        ref_context: Sequence[torch.Tensor],
        *,
        splice: bool = True,
        decoder: FrameDecoder | None = None,
    ) -> torch.Tensor:
        """Model-space latents ``(B, 4, T, h, w)`` -> video ``(B, 3, T, H, W)`` float32.

        ``ref_context``: the encoder hidden states of the first and last key frame, each
        ``(B, C_i, 2, H_i, W_i)``. ``decoder`` (default: ``self.decoder``, the official ``dualref``) is the
        stage that decodes (``toonctl.pipelines.decoders``); ``splice=False`` turns off its second pass,
        in which the official decode replaces the two middle frames by their decode without frames 1 and T-2.
        """
        decoder = decoder or self.decoder
        if not splice:
            decoder = without_splice(decoder)
        if self.fit_decode_to_memory:
            decoder = fit_to_memory(decoder, self.vae, latents, available_memory(latents.device))
        return decoder(self.vae, latents, ref_context)

    # -- the task -----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        start: torch.Tensor,
        end: torch.Tensor,
        prompt: str = "",
        *,
        num_frames: int | None = None,
        steps: int = 50,
        guidance_scale: float = 7.5,
        guidance_rescale: float = 0.7,
        frame_stride: int = 10,
        eta: float = 1.0,
        timestep_spacing: str = "uniform_trailing",
        generator: torch.Generator | None = None,
        noise: InterpolationNoise | None = None,
        batched_guidance: bool = True,
        splice: bool = True,
        control: ControlStage | Sequence[ControlStage] | None = None,
        conditions: SegmentConditions | None = None,
        callback: Callable[[dict], None] | None = None,
    ) -> InterpolationOutput:
        """Generate the frames from ``start`` to ``end``.

        Args:
            start, end: key frames ``(3, H, W)`` or ``(1, 3, H, W)`` in [-1, 1], sides multiples of
                ``latent_factor`` (64 for the 512 model).
            prompt: text prompt ("" = none).
            num_frames: frames to generate including both key frames (default: the model's 16).
            steps, guidance_scale, guidance_rescale, eta, timestep_spacing: DDIM settings; the
                defaults are the official ``scripts/run.sh`` ones.
            frame_stride: the fs condition; smaller means larger motion.
            generator: source of all random draws when ``noise`` is None.
            noise: replay these draws instead (see ``InterpolationNoise``).
            batched_guidance: cond + uncond in one UNet call; False = two calls as officially.
            splice: the official second decode of the two middle frames.
            control: an optional stage steering the UNet in both guidance branches (e.g. sketches), or
                several (their residuals add up).
            conditions: this segment's encoder outputs from ``prepare_conditions`` (computed if None).
            callback: called after every step with the sampler's step dict plus ``v_cond`` and
                ``v_uncond`` (the two guidance branches).
        """
        with self._autocast():
            return self._interpolate(
                start, end, prompt, num_frames=num_frames, steps=steps, guidance_scale=guidance_scale,
                guidance_rescale=guidance_rescale, frame_stride=frame_stride, eta=eta,
                timestep_spacing=timestep_spacing, generator=generator, noise=noise,
                batched_guidance=batched_guidance, splice=splice, control=control, conditions=conditions,
                callback=callback,
            )  # fmt: skip

    def _autocast(self):
        """``torch.autocast`` to ``autocast_dtype`` (the official fp16 regime with fp32 weights), or nothing."""
        import contextlib

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _interpolate(self, start, end, prompt, *, num_frames, steps, guidance_scale, guidance_rescale, frame_stride,
                     eta, timestep_spacing, generator, noise, batched_guidance, splice, control, conditions,
                     callback) -> InterpolationOutput:  # fmt: skip
        # 0. defaults and checks
        start, end = _as_batch(start, "start"), _as_batch(end, "end")
        num_frames = num_frames or self.config.unet.temporal_length
        self._check_inputs(start, end, num_frames)
        height, width = start.shape[-2:]
        latent_hw = (height // 8, width // 8)
        if noise is None:
            noise = InterpolationNoise.draw(
                num_frames=num_frames, latent_hw=latent_hw, num_steps=steps, generator=generator
            )
        self._start_prefetch()
        # 1-3. text (prompt and ""), image context (first key, zero image), key-frame encodings
        conditions = conditions or self.prepare_conditions(start, end, prompt)
        text, image, enc = conditions.text, conditions.image, conditions.keyframes
        # 4. key frames -> posterior samples (c_concat) and the decoder's reference features
        posterior_noise = noise.posterior
        if posterior_noise.shape[0] != 2:
            posterior_noise = posterior_noise[[0, -1]]
        z_keys = enc.sample(posterior_noise).to(self.device) * self.config.vae.scale_factor
        concat = torch.zeros(1, z_keys.shape[1], num_frames, *latent_hw, device=self.device)
        concat[:, :, 0], concat[:, :, -1] = z_keys[0], z_keys[1]
        ref_context = [h.unsqueeze(0).transpose(1, 2) for h in enc.hidden_states]  # (1, C, 2, H, W)
        # 5. the two guidance branches
        fs = torch.tensor([frame_stride], device=self.device, dtype=torch.long)
        cond = Conditioning(context=torch.cat([text[:1], image[:1]], dim=1), concat=concat, fs=fs)
        uncond = Conditioning(context=torch.cat([text[1:], image[1:]], dim=1), concat=concat, fs=fs)
        branches: dict[str, torch.Tensor] = {}
        denoiser = GuidedDenoiser(
            self.unet, cond, uncond,
            guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, batched=batched_guidance,
            on_branch_outputs=lambda c, u: branches.update(v_cond=c, v_uncond=u), control=combine_controls(control),
        )  # fmt: skip
        # 6. DDIM
        schedule = make_ddim_schedule(self.schedule, steps, eta=eta, spacing=timestep_spacing)
        on_step = None if callback is None else (lambda info: callback({**info, **branches}))
        with self.placement.use_all({"unet": self.unet, **self.controls}):  # the control stages run in the loop
            latents = sample_ddim(
                denoiser, noise.x_T.to(self.device), schedule, noise=[n.to(self.device) for n in noise.steps],
                callback=on_step,
            )  # fmt: skip
        # 7. decode (with the official splice of the middle frames)
        with self.placement.use("vae", self.vae) as vae_device:
            video = self.decode_latents(latents.to(vae_device), ref_context, splice=splice)
        check_finite(video, "decoding the frames")
        return InterpolationOutput(video=video, latents=latents)

    def _start_prefetch(self) -> None:
        """Once per pipeline: page the sampler's and the decoder's file-backed weights in ahead of use."""
        if not self.prefetch_weights or self._prefetch is not None:
            return
        from toonctl.mapped_weights import Prefetch

        modules = [self.unet, *self.controls.values(), self.vae]
        self._prefetch = Prefetch(m for m in modules if m is not None).start()

    @torch.no_grad()
    def prepare_conditions(self, start: torch.Tensor, end: torch.Tensor, prompt: str = "") -> SegmentConditions:
        """Run the encoders for one segment: text, image context and the two key frames' VAE encodings."""
        start, end = _as_batch(start, "start"), _as_batch(end, "end")
        text = check_finite(self.encode_text([prompt, ""]), "text encoding")
        image = check_finite(self.encode_image(torch.cat([start, torch.zeros_like(start)])), "image encoding")
        keyframes = self.encode_keyframes(torch.cat([start, end]))
        check_finite(keyframes.moments, "key-frame encoding")
        return SegmentConditions(text=text, image=image, keyframes=keyframes)

    def _check_inputs(self, start: torch.Tensor, end: torch.Tensor, num_frames: int) -> None:
        if start.shape != end.shape:
            raise UnsupportedSizeError(
                f"key frames differ in size: {tuple(start.shape[-2:])} vs {tuple(end.shape[-2:])}"
            )
        height, width = start.shape[-2:]
        factor = self.latent_factor
        if height % factor or width % factor:
            raise UnsupportedSizeError(
                f"frame size {height}x{width} (HxW) is not a multiple of {factor} on both sides"
            )
        max_frames = self.config.unet.temporal_length
        if not 4 <= num_frames <= max_frames:
            raise OptionError(f"num_frames must be in 4..{max_frames}, got {num_frames}", option="num_frames")


def latent_factor(config: ToonCrafterConfig) -> int:
    """Pixel sides must be multiples of this: 8 (VAE) x 2 per UNet downsampling."""
    return 8 * 2 ** (len(config.unet.channel_mult) - 1)


def native_size(config: ToonCrafterConfig) -> tuple[int, int]:
    """The (H, W) the model was trained at: 320x512 for ToonCrafter-512."""
    h, w = config.diffusion.image_size
    return 8 * h, 8 * w


def _require(module: nn.Module | None, name: str) -> nn.Module:
    if module is None:
        raise RuntimeError(f"the {name} was released (release_encoders); pass precomputed conditions")
    return module


def _dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


def _as_batch(frame: torch.Tensor, name: str) -> torch.Tensor:
    if frame.ndim == 3:
        frame = frame.unsqueeze(0)
    if frame.ndim != 4 or frame.shape[0] != 1 or frame.shape[1] != 3:
        raise ValueError(f"{name} must be (3, H, W) or (1, 3, H, W), got {tuple(frame.shape)}")
    return frame.float()
