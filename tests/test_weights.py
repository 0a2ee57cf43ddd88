"""``toonctl.weights`` and ``toonctl weights``: fetch (mocked Hub), import (incl. a pruned file + OpenCLIP),
list, verify, resolve. Offline: nothing here reaches the network or the repository's own weights/ folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled
from safetensors.torch import save_file
from typer.testing import CliRunner

from conftest import TINY_A
from toonctl import weights
from toonctl.cli.app import app
from toonctl.convert.components import is_converted_dir, load_converted
from toonctl.convert.tooncrafter import IMAGE_EMBEDDER_PREFIX, TEXT_PREFIX, load_components, read_state_dict
from toonctl.errors import CheckpointError, ToonctlError, WeightsNotFoundError
from toonctl.models.configs import ToonCrafterConfig

runner = CliRunner()


@pytest.fixture
def wdir(tmp_path, monkeypatch):
    """An empty weights folder through $TOONCTL_WEIGHTS; the CWD moves too, so weights/ is never the repo's."""
    folder = tmp_path / "weights-env"
    monkeypatch.setenv("TOONCTL_WEIGHTS", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


@pytest.fixture(scope="module")
def tiny_copy(tmp_path_factory):
    """tiny-a's official-layout file and config.yaml, in a folder of their own."""
    folder = tmp_path_factory.mktemp("tiny")
    shutil.copy(TINY_A / "model.safetensors", folder / "model.safetensors")
    shutil.copy(TINY_A / "config.yaml", folder / "config.yaml")
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory, tiny_copy):
    return weights.import_checkpoint(tiny_copy / "model.safetensors", tmp_path_factory.mktemp("conv"), name="tiny")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, tiny_state_dict, tiny_copy):
    """kijai-style: fp16, no CLIP towers, no schedule buffers; next to tiny-a's config.yaml."""
    path = tiny_copy / "tiny-pruned-fp16.safetensors"
    save_file(
        {
            k: v.half()
            for k, v in tiny_state_dict.items()
            if "." in k and not k.startswith((TEXT_PREFIX, IMAGE_EMBEDDER_PREFIX))
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def open_clip_bin(tmp_path_factory, tiny_state_dict):
    """tiny-a's CLIP towers in the open_clip layout (``open_clip_pytorch_model.bin``: a plain state dict)."""
    text = {k.removeprefix(TEXT_PREFIX): v for k, v in tiny_state_dict.items() if k.startswith(TEXT_PREFIX)}
    vision_prefix = IMAGE_EMBEDDER_PREFIX + "visual."
    vision = {
        k.removeprefix(IMAGE_EMBEDDER_PREFIX): v for k, v in tiny_state_dict.items() if k.startswith(vision_prefix)
    }
    assert "text_projection" in text and "visual.proj" in vision and "transformer.resblocks.2.ln_1.weight" in text
    path = tmp_path_factory.mktemp("clip") / "open_clip_pytorch_model.bin"
    torch.save({**text, **vision, "attn_mask": torch.zeros(77, 77)}, path)  # a stray buffer is skipped
    return path


@pytest.fixture(scope="module")
def reference(tiny_config):
    return load_components(TINY_A / "model.safetensors", tiny_config)


# -- import --------------------------------------------------------------------------------------------


def test_pruned_file_with_open_clip_towers(pruned, open_clip_bin, tmp_path, reference):
    assert weights.checkpoint_layout(read_state_dict(pruned)) == "pruned"
    out = weights.import_checkpoint(pruned, tmp_path, clip=open_clip_bin, dtype="fp32")
    assert out == tmp_path / "tiny-pruned-fp16-fp32" and is_converted_dir(out)
    loaded = load_converted(out)
    for name in ("text_encoder", "image_encoder"):  # fp32 from the CLIP file: exact
        ref = reference[name].state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in loaded[name].state_dict().items()), name
    unet_ref = reference["unet"].state_dict()  # fp16 in the pruned file
    assert all(torch.equal(v, unet_ref[k].half().float()) for k, v in loaded["unet"].state_dict().items())
    for key, value in reference["schedule"].items():  # rebuilt from the config
        torch.testing.assert_close(loaded["schedule"][key], value, atol=1e-6, rtol=1e-5)


def test_pruned_file_with_towers_from_an_official_checkpoint(pruned, tmp_path, reference):
    out = weights.import_checkpoint(pruned, tmp_path, clip=TINY_A / "model.safetensors", name="x")
    loaded = load_converted(out, components=["text_encoder"])
    ref = reference["text_encoder"].state_dict()
    assert all(torch.equal(v, ref[k].half()) for k, v in loaded["text_encoder"].state_dict().items())


def test_pruned_file_without_clip_explains(pruned, tmp_path):
    with pytest.raises(CheckpointError) as info:
        weights.import_checkpoint(pruned, tmp_path)
    message = str(info.value)
    for needle in ("--clip", "cond_stage_model", "open_clip_pytorch_model.bin", "laion/CLIP-ViT-H-14", "model.ckpt"):
        assert needle in message
    assert "--clip" in info.value.hint
    assert list(tmp_path.iterdir()) == []


def test_clip_layouts_that_are_refused(tmp_path, converted):
    with pytest.raises(CheckpointError, match="already a converted model"):
        weights.import_checkpoint(converted, tmp_path)
    with pytest.raises(CheckpointError, match="transformers CLIPModel"):
        weights.clip_renames(["text_model.embeddings.token_embedding.weight"], tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match="not an OpenCLIP checkpoint"):
        weights.clip_renames(["foo.weight"], tmp_path / "x.bin")
    with pytest.raises(CheckpointError, match="not a ToonCrafter checkpoint"):
        weights.checkpoint_layout(["cond_stage_model.model.ln_final.weight"])


def test_import_names_and_config(tiny_copy, tmp_path, tiny_config):
    assert weights.default_name(Path("model.ckpt"), ToonCrafterConfig(), "fp16") == "tooncrafter-512-fp16"
    assert weights.default_name(Path("a/tiny.safetensors"), tiny_config, "bf16") == "tiny-bf16"
    assert weights.config_for(tiny_copy / "model.safetensors") == tiny_config  # the config.yaml next to it
    with pytest.raises(ValueError, match="unknown dtype"):
        weights.import_checkpoint(tiny_copy / "model.safetensors", tmp_path, dtype="fp8")


# -- fetch ---------------------------------------------------------------------------------------------


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace ``hf_hub_download``: records the calls and writes a small file."""
    calls = []

    def download(*, repo_id, filename, local_dir, **kwargs):
        calls.append({"repo_id": repo_id, "filename": filename, "local_dir": Path(local_dir), **kwargs})
        path = Path(local_dir) / filename
        path.write_bytes(b"weights of " + filename.encode())
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


def test_fetch_calls_the_hub(fake_hub, tmp_path):
    paths = weights.fetch(["model.ckpt", "sketch_encoder.ckpt"], tmp_path / "w", progress=False)
    assert paths == [tmp_path / "w" / "model.ckpt", tmp_path / "w" / "sketch_encoder.ckpt"]
    assert [c["filename"] for c in fake_hub] == ["model.ckpt", "sketch_encoder.ckpt"]
    assert all(c["repo_id"] == "Doubiiu/ToonCrafter" and c["local_dir"] == tmp_path / "w" for c in fake_hub)
    with pytest.raises(ToonctlError, match="unknown file"):
        weights.fetch(["model.safetensors"], tmp_path)


def _raising(exc):
    def download(**kwargs):
        raise exc

    return download


def _offline_error():
    exc = LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub ...")
    exc.__cause__ = OfflineModeIsEnabled("offline mode is enabled")
    return exc


@pytest.mark.parametrize(
    ("exc", "error", "needle"),
    [
        (_offline_error(), WeightsNotFoundError, "offline mode is on (HF_HUB_OFFLINE)"),
        (LocalEntryNotFoundError("connection"), WeightsNotFoundError, "the Hugging Face Hub cannot be reached"),
        (EntryNotFoundError("404"), WeightsNotFoundError, "model.ckpt is not in Doubiiu/ToonCrafter"),
        (ConnectionResetError("reset"), WeightsNotFoundError, "network error (ConnectionResetError)"),
    ],
)
def test_fetch_errors_are_one_line(monkeypatch, tmp_path, exc, error, needle):
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _raising(exc))
    with pytest.raises(error) as info:
        weights.fetch(["model.ckpt"], tmp_path, progress=False)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert info.value.hint


def test_fetch_with_the_real_library_in_offline_mode(monkeypatch, tmp_path):
    """huggingface_hub itself, with HF_HUB_OFFLINE: no request is made; the error maps to one line."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    with pytest.raises(WeightsNotFoundError, match="offline mode is on"):
        weights.fetch(["sketch_extractor.pth"], tmp_path / "w", progress=False)
    # A file already there is returned as is (huggingface_hub's offline fallback).
    (tmp_path / "w" / "sketch_extractor.pth").write_bytes(b"x")
    assert weights.fetch(["sketch_extractor.pth"], tmp_path / "w", progress=False) == [
        tmp_path / "w" / "sketch_extractor.pth"
    ]


# -- list ----------------------------------------------------------------------------------------------


def test_list_weights(tmp_path, converted):
    folder = tmp_path / "w"
    folder.mkdir()
    torch.save({"state_dict": {"x": torch.zeros(4)}}, folder / "model.ckpt")
    whole = (folder / "model.ckpt").read_bytes()
    (folder / "sketch_encoder.ckpt").write_bytes(whole[: len(whole) // 2])  # truncated download
    save_file({"a": torch.zeros(8)}, folder / "other.safetensors")
    shutil.copytree(converted, folder / "tiny")
    shutil.copytree(converted, folder / "broken")
    (folder / "broken" / "unet.safetensors").unlink()
    (folder / "notes").mkdir()
    (folder / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download" / "abc.def.incomplete").write_bytes(b"123")

    entries = {e.name: e for e in weights.list_weights(folder)}
    assert set(entries) == {
        "model.ckpt",
        "sketch_encoder.ckpt",
        "other.safetensors",
        "tiny",
        "broken",
        "abc.def.incomplete",
    }
    assert entries["model.ckpt"].kind == "official" and entries["model.ckpt"].complete
    assert "expected about 10.5 GB" in entries["model.ckpt"].note
    assert not entries["sketch_encoder.ckpt"].complete
    assert entries["other.safetensors"].kind == "checkpoint" and entries["other.safetensors"].complete
    assert entries["tiny"].kind == "converted" and entries["tiny"].complete and entries["tiny"].note == "float16"
    assert not entries["broken"].complete and "missing unet.safetensors" in entries["broken"].note
    assert entries["abc.def.incomplete"].kind == "partial" and not entries["abc.def.incomplete"].complete
    assert weights.list_weights(tmp_path / "nowhere") == []


def test_file_complete_checks_safetensors_length(tmp_path):
    path = tmp_path / "a.safetensors"
    save_file({"a": torch.zeros(100)}, path)
    assert weights.file_complete(path) is True
    path.write_bytes(path.read_bytes()[:-10])
    assert weights.file_complete(path) is False
    (tmp_path / "legacy.pth").write_bytes(b"\x80\x02not a zip")
    assert weights.file_complete(tmp_path / "legacy.pth") is None


# -- verify --------------------------------------------------------------------------------------------


def test_verify_a_checkpoint_file(tiny_copy):
    path = tiny_copy / "model.safetensors"
    seen = []
    report = weights.verify(path, progress=lambda done, total: seen.append((done, total)))
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report.size == path.stat().st_size and seen[-1] == (report.size, report.size)
    assert report.kind == "official" and report.loads and report.ok and not report.fully_loaded
    assert report.hub_sha256 is None and report.sha256_matches is None


def test_verify_against_the_hub_record(tmp_path):
    path = tmp_path / "model.safetensors"
    shutil.copy(TINY_A / "model.safetensors", path)
    shutil.copy(TINY_A / "config.yaml", tmp_path / "config.yaml")
    meta = tmp_path / ".cache" / "huggingface" / "download" / "model.safetensors.metadata"
    meta.parent.mkdir(parents=True)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    meta.write_text(f"{'0' * 40}\n{digest}\n{path.stat().st_mtime + 5}\n")
    assert weights.verify(path).sha256_matches is True
    meta.write_text(f"{'0' * 40}\n{'f' * 64}\n{path.stat().st_mtime + 5}\n")
    report = weights.verify(path)
    assert report.sha256_matches is False and not report.ok and "re-download" in report.problems[-1]


def test_verify_finds_problems(tiny_copy, pruned):
    wrong = weights.verify(tiny_copy / "model.safetensors", config=ToonCrafterConfig())
    assert not wrong.loads and "does not match" in wrong.problems[0]
    report = weights.verify(pruned)
    assert report.kind == "pruned" and not report.loads and "--clip" in report.problems[0]
    assert report.components == ["unet", "vae", "image_proj"]
    with pytest.raises(WeightsNotFoundError):
        weights.verify(tiny_copy / "nope.ckpt")


def test_verify_a_converted_directory(converted):
    report = weights.verify(converted, full=True)
    assert report.kind == "converted" and report.ok and report.fully_loaded
    assert (
        report.files["unet.safetensors"] == hashlib.sha256((converted / "unet.safetensors").read_bytes()).hexdigest()
    )
    assert report.size == sum(p.stat().st_size for p in converted.iterdir())


# -- resolve -------------------------------------------------------------------------------------------


def test_resolve_weights_not_found_lists_the_places(wdir):
    with pytest.raises(WeightsNotFoundError) as info:
        weights.resolve_weights(None, None)
    message = str(info.value)
    assert str(wdir) in message and "$TOONCTL_WEIGHTS" in message
    assert "model.ckpt" in message and "model.safetensors" in message and "converted" in message
    assert "toonctl weights fetch" in info.value.hint


def test_resolve_weights_precedence(wdir, converted, tiny_config, tiny_copy):
    wdir.mkdir()
    (wdir / "model.ckpt").write_bytes(b"x")
    assert weights.resolve_weights() == (wdir / "model.ckpt", ToonCrafterConfig())
    shutil.copytree(converted, wdir / "b-incomplete")
    (wdir / "b-incomplete" / "vae.safetensors").unlink()
    assert weights.resolve_weights()[0] == wdir / "model.ckpt"  # incomplete converted dirs are skipped
    shutil.copytree(converted, wdir / "c-tiny")
    assert weights.resolve_weights() == (wdir / "c-tiny", tiny_config)  # converted beats model.ckpt
    explicit = tiny_copy / "model.safetensors"
    assert weights.resolve_weights(explicit, None) == (explicit, tiny_config)  # config.yaml next to it
    config_json = wdir / "c-tiny" / "config.json"
    assert weights.resolve_weights(wdir / "model.ckpt", config_json) == (wdir / "model.ckpt", tiny_config)
    assert weights.resolve_weights(wdir, None)[0] == wdir / "c-tiny"  # a folder is searched
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        weights.resolve_weights(wdir / "missing.ckpt", None)


def test_load_weights_dispatches(converted, tiny_copy, tiny_config):
    from_dir = weights.load_weights(converted, components=["image_proj"])
    from_file = weights.load_weights(tiny_copy / "model.safetensors", components=["image_proj"])
    assert next(from_dir["image_proj"].parameters()).dtype == torch.float16
    a, b = from_dir["image_proj"].state_dict(), from_file["image_proj"].state_dict()
    assert all(torch.equal(a[k], b[k].half()) for k in b)
    with pytest.raises(ToonctlError, match="differs"):
        weights.load_weights(converted, ToonCrafterConfig(), components=["image_proj"])


def test_default_folder_is_relative_to_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("TOONCTL_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert weights.weights_dir() == Path("weights")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"x")
    assert weights.resolve_weights()[0] == Path("weights/model.safetensors")


# -- CLI -----------------------------------------------------------------------------------------------


def _json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cli_help_has_examples():
    result = runner.invoke(app, ["weights", "--help"])
    assert result.exit_code == 0
    for command in ("fetch", "import", "convert", "list", "verify"):
        assert command in result.stdout
    for command in ("fetch", "import", "convert", "list", "verify"):
        result = runner.invoke(app, ["weights", command, "--help"])
        assert result.exit_code == 0 and "Examples" in result.stdout and f"toonctl weights {command}" in result.stdout


def test_cli_fetch(fake_hub, wdir):
    result = runner.invoke(app, ["weights", "fetch", "--sketch", "--json"])
    assert result.exit_code == 0, result.output
    data = _json(result)
    assert set(data["files"]) == {"model.ckpt", "sketch_encoder.ckpt", "sketch_extractor.pth"}
    assert all(c["local_dir"] == wdir for c in fake_hub)


def test_cli_fetch_and_convert(monkeypatch, wdir, tiny_state_dict):
    def download(*, repo_id, filename, local_dir, **kwargs):
        torch.save({"state_dict": tiny_state_dict}, Path(local_dir) / filename)
        return str(Path(local_dir) / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    wdir.mkdir()
    shutil.copy(TINY_A / "config.yaml", wdir / "config.yaml")  # the architecture of the fake model.ckpt
    result = runner.invoke(app, ["weights", "fetch", "--convert", "--json"])
    assert result.exit_code == 0, result.output
    assert _json(result)["converted"] == str(wdir / "model-fp16") and is_converted_dir(wdir / "model-fp16")


def test_cli_fetch_offline(monkeypatch, wdir):
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _raising(_offline_error()))
    result = runner.invoke(app, ["weights", "fetch"])
    assert result.exit_code == 1
    assert "Error: cannot download model.ckpt: offline mode is on" in result.stderr
    assert "Hint:" in result.stderr and "Traceback" not in result.output


def test_cli_convert_list_verify(wdir, tiny_copy):
    result = runner.invoke(
        app, ["weights", "convert", str(tiny_copy / "model.safetensors"), "--dtype", "fp32", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = _json(result)
    assert data["path"] == str(wdir / "model-fp32") and data["dtype"] == "fp32"

    result = runner.invoke(app, ["weights", "list", "--json"])
    assert result.exit_code == 0
    assert [(e["name"], e["kind"], e["complete"]) for e in _json(result)["entries"]] == [
        ("model-fp32", "converted", True)
    ]
    result = runner.invoke(app, ["weights", "list"])
    assert result.exit_code == 0 and "model-fp32" in result.stdout and "converted" in result.stdout

    result = runner.invoke(app, ["weights", "verify", "--json"])  # the model resolve_weights finds
    assert result.exit_code == 0, result.output
    data = _json(result)
    assert data["ok"] and data["kind"] == "converted" and data["path"] == str(wdir / "model-fp32")

    result = runner.invoke(app, ["weights", "convert", str(tiny_copy / "model.safetensors"), "--dtype", "fp32"])
    assert result.exit_code == 1 and "already exists" in result.stderr and "--force" in result.stderr


def test_cli_usage_and_failures(wdir, pruned):
    result = runner.invoke(app, ["weights", "import", str(pruned), "--dtype", "fp8"])
    assert result.exit_code == 2
    result = runner.invoke(app, ["weights", "import", str(pruned)])
    assert result.exit_code == 1 and "Error:" in result.stderr and "--clip PATH" in result.stderr
    result = runner.invoke(app, ["weights", "verify"])
    assert result.exit_code == 1 and "no model weights found" in result.stderr
    result = runner.invoke(app, ["weights", "verify", str(pruned)])
    assert result.exit_code == 1 and "Error:" in result.stderr and "--clip" in result.stderr
    result = runner.invoke(app, ["weights", "list"])
    assert result.exit_code == 0 and "no weights" in result.stdout
    result = runner.invoke(app, ["weights", "verify", str(pruned), "--config", str(wdir / "nope.yaml")])
    assert result.exit_code == 1 and "cannot read config" in result.stderr


def test_cli_in_a_subprocess(tmp_path, converted):
    folder = tmp_path / "w"
    shutil.copytree(converted, folder / "tiny")
    env = {**os.environ, "TOONCTL_WEIGHTS": str(folder)}
    result = subprocess.run(
        [sys.executable, "-m", "toonctl", "weights", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["entries"][0]["name"] == "tiny"


def test_weights_help_does_not_import_torch():
    code = (
        "import sys\nfrom toonctl.cli.app import app\n"
        "try:\n    app(['weights', 'import', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
