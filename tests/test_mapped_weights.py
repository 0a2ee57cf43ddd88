"""Prefetching memory-mapped weights (toonctl.mapped_weights): which tensors, how many pages, same outputs."""

from __future__ import annotations

import resource
import sys

import pytest
import torch

from conftest import TINY_A
from toonctl.mapped_weights import Prefetch, file_mappings, mapped_ranges

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps and madvise")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny_state_dict):
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.save({"state_dict": tiny_state_dict}, path)
    return path


def _load(path):
    from toonctl.pipelines.interpolate import InterpolationPipeline

    return InterpolationPipeline.from_checkpoint(path, TINY_A / "config.yaml")


def _faults_reading(module) -> int:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with torch.no_grad():
        for p in module.parameters():
            p.sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_file_mappings_parses_proc_maps():
    text = (
        "7f0000000000-7f0000002000 r--p 00000000 fd:01 1234 /ckpt/model.ckpt\n"
        "7f0000002000-7f0000003000 rw-p 00000000 00:00 0 \n"
        "7fff00000000-7fff00001000 rw-p 00000000 00:00 0 [stack]\n"
    )
    assert file_mappings(text) == [(0x7F0000000000, 0x7F0000002000)]


def test_only_tensors_in_the_checkpoint_mapping_count(tiny_ckpt):
    pipe = _load(tiny_ckpt)
    ranges = mapped_ranges([pipe.unet])
    mapped_bytes = sum(b - a for a, b in ranges)
    weight_bytes = sum(p.untyped_storage().nbytes() for p in pipe.unet.parameters())
    assert weight_bytes <= mapped_bytes < weight_bytes + 4096 * (len(ranges) + len(list(pipe.unet.parameters())))
    assert mapped_ranges([torch.nn.Linear(64, 64)]) == []  # private memory: nothing to prefetch


def test_prefetch_maps_the_pages_in_ahead_of_the_model(tiny_ckpt):
    cold = _faults_reading(_load(tiny_ckpt).unet)  # a fresh mapping: the first read faults the pages in
    pipe = _load(tiny_ckpt)
    prefetch = Prefetch([pipe.unet]).start()
    prefetch.join(timeout=60)
    assert prefetch.bytes_done == prefetch.total_bytes > 0
    warm = _faults_reading(pipe.unet)
    assert cold > 20 and warm <= cold // 4, (cold, warm)


def test_a_prefetching_run_gives_the_same_frames(tiny_ckpt):
    start, end = torch.rand(2, 3, 64, 64).mul(2).sub(1)
    outputs = []
    for prefetch in (False, True):
        pipe = _load(tiny_ckpt)
        pipe.prefetch_weights = prefetch
        outputs.append(pipe(start, end, "x", steps=2, num_frames=8, generator=torch.Generator().manual_seed(0)))
        assert (pipe._prefetch is not None) == prefetch
    assert torch.equal(outputs[0].video, outputs[1].video)


def _resident_bytes(ranges) -> int:
    """Resident bytes of the mappings overlapping ``ranges`` (``/proc/self/smaps``)."""
    import re

    text = open("/proc/self/smaps").read()
    total = 0
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text):
        start, end = (int(x, 16) for x in block.split()[0].split("-"))
        if any(a < end and start < b for a, b in ranges):
            total += int(re.search(r"^Rss:\s+(\d+) kB", block, re.M).group(1)) * 1024
    return total


def test_released_encoders_leave_the_process_and_the_model_still_runs(tiny_ckpt):
    from toonctl.mapped_weights import release

    pipe = _load(tiny_ckpt)
    start, end = torch.rand(2, 3, 64, 64).mul(2).sub(1)
    conditions = pipe.prepare_conditions(start, end, "x")  # the encoders' pages are now mapped in
    encoders = [pipe.text_encoder, pipe.image_encoder, pipe.image_proj]
    unet_before = [p.clone() for p in pipe.unet.parameters()]
    for encoder in encoders:  # every page in (a text encoder reads only the embedding rows of its tokens)
        _faults_reading(encoder)
    ranges = mapped_ranges(encoders)
    resident = _resident_bytes(ranges)
    released = release(encoders)
    assert 0 < released <= sum(b - a for a, b in ranges)
    assert resident - _resident_bytes(ranges) >= 0.9 * released  # they no longer count towards the process
    first = pipe(
        start, end, "x", steps=2, num_frames=8, conditions=conditions, generator=torch.Generator().manual_seed(0)
    )
    pipe.release_encoders()
    again = pipe(
        start, end, "x", steps=2, num_frames=8, conditions=conditions, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(first.video, again.video)
    assert all(torch.equal(a, b) for a, b in zip(unet_before, pipe.unet.parameters(), strict=True))
