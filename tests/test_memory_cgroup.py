"""A memory cgroup's limit is what a run may use (toonctl.memory): v2 and v1 layouts, page cache reclaimable."""

from __future__ import annotations

from pathlib import Path

from toonctl.memory import _cgroup_headroom

GIB = 2**30


def _write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_v2_limit_minus_usage_without_page_cache(tmp_path):
    (tmp_path / "cgroup").write_text("0::/jobs/render\n")
    _write(
        tmp_path / "fs" / "jobs" / "render",
        {"memory.max": f"{12 * GIB}\n", "memory.current": f"{10 * GIB}\n", "memory.stat": f"anon 1\nfile {7 * GIB}\n"},
    )
    assert _cgroup_headroom(tmp_path / "cgroup", tmp_path / "fs") == 9 * GIB


def test_v1_memory_controller_and_its_no_limit_value(tmp_path):
    (tmp_path / "cgroup").write_text("5:cpu:/\n4:memory:/batch/a\n0::/\n")
    folder = tmp_path / "fs" / "memory" / "batch" / "a"
    _write(
        folder,
        {
            "memory.limit_in_bytes": f"{16 * GIB}\n",
            "memory.usage_in_bytes": f"{6 * GIB}\n",
            "memory.stat": f"cache {4 * GIB}\ntotal_cache {5 * GIB}\n",
        },
    )
    assert _cgroup_headroom(tmp_path / "cgroup", tmp_path / "fs") == 15 * GIB
    (folder / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert _cgroup_headroom(tmp_path / "cgroup", tmp_path / "fs") is None


def test_namespaced_container_reads_the_mount_root_and_unlimited_is_none(tmp_path):
    (tmp_path / "cgroup").write_text("0::/\n")
    _write(tmp_path / "fs", {"memory.max": "max\n", "memory.current": "123\n"})
    assert _cgroup_headroom(tmp_path / "cgroup", tmp_path / "fs") is None
    assert _cgroup_headroom(tmp_path / "missing", tmp_path / "nothing") is None
