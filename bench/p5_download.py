"""P5 download memory: peak RSS growth of the client while it downloads and extracts a
1 GiB checkpoint archive from ``tinkex serve``.

Setup (in this process): a real sampler checkpoint is saved through tinkex, then its
``adapter_model.safetensors`` in the server's data directory is replaced by a 1 GiB file
and the server is made to build (and cache) the archive once. Measurement (in a fresh
subprocess, so nothing else lives in the measured process): a tinkex ``ServiceClient`` is
created and warmed up, the baseline RSS is taken, then ``RestClient.download_checkpoint``
runs while a thread samples RSS every 2 ms; the growth is the larger of the sampled peak
and the ``ru_maxrss`` high-water mark (when it moved) minus the baseline. Throughput is
compared with ``shutil.copyfile`` of the same archive on the same disk: a second row
(target ≥ 0.5×, the disk being the limit).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from bench._clients import SMALL_MODEL, close_quietly, tinkex_service
from bench._harness import Context, Row, log
from tinkex_types.manifest import write_manifest

KEY = "p5"
TITLE = "download memory"
OP: Final = "<="
TARGET = 32.0
UNIT = "MB"
#: download + extraction throughput ≥ this × a plain copy of the same archive (the disk).
SPEED_TARGET = 0.5

NAME = "bench-p5-archive"
_BLOCK = 16 * 1024 * 1024


def _write_big(path: Path, size: int) -> None:
    block = os.urandom(min(_BLOCK, size))
    with path.open("wb") as fh:
        left = size
        while left > 0:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n


def _child(base_url: str, tinker_path: str, dest: str) -> dict[str, Any]:
    """Runs in the measured subprocess."""
    from bench._rss import RssSampler, current_rss, peak_rss

    service = tinkex_service(base_url)
    rest = service.create_rest_client()
    rest.get_checkpoint_archive_url_from_tinker_path(tinker_path).result()  # warm-up
    baseline = current_rss()
    peak_before = peak_rss()
    with RssSampler(0.002) as sampler:
        start = time.perf_counter()
        out = rest.download_checkpoint(tinker_path, dest).result()
        seconds = time.perf_counter() - start
    peak_after = peak_rss()
    close_quietly(service)
    peak = max(sampler.peak, peak_after if peak_after > peak_before else 0)
    files = {p.name: p.stat().st_size for p in Path(out).iterdir()}
    return {
        "baseline": baseline,
        "peak": peak,
        "sampled_peak": sampler.peak,
        "ru_maxrss_before": peak_before,
        "ru_maxrss_after": peak_after,
        "samples": sampler.samples,
        "seconds": seconds,
        "files": files,
    }


def run(ctx: Context) -> list[Row]:
    size = 8 * 1024 * 1024 if ctx.tiny else 1024**3
    server = ctx.server()
    work = ctx.scratch("p5")
    log(f"p5: {size / 2**20:.0f} MiB checkpoint archive")
    service = tinkex_service(server.base_url)
    try:
        training = service.create_lora_training_client(SMALL_MODEL, rank=4)
        tinker_path = training.save_weights_for_sampler(NAME).result().path
        (ckpt_dir,) = server.data_dir.glob(f"checkpoints/*/sampler_weights/{NAME}")
        started = time.perf_counter()
        _write_big(ckpt_dir / "adapter_model.safetensors", size)
        # The server verifies every checkpoint against its manifest before archiving it.
        write_manifest(ckpt_dir)
        log(f"p5: wrote the big file in {time.perf_counter() - started:.1f} s")
        rest = service.create_rest_client()
        url = rest.get_checkpoint_archive_url_from_tinker_path(tinker_path).result().url
        started = time.perf_counter()
        import httpx

        with httpx.stream("GET", url, timeout=600.0) as response:  # builds the cached tar
            response.raise_for_status()
            next(response.iter_bytes(65536), b"")
        (archive,) = server.data_dir.glob(f"archives/*/sampler_weights/{NAME}.tar")
        archive_bytes = archive.stat().st_size
        log(f"p5: server built the archive in {time.perf_counter() - started:.1f} s")

        dest = work / "download"
        # Both sides start with no dirty page cache: writeback of the gigabytes just written
        # (the checkpoint, its archive, the extraction) would otherwise throttle whichever
        # side runs next (copies from 600 to 3,400 MB/s were seen for the same file).
        os.sync()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        proc = subprocess.run(
            [sys.executable, "-m", "bench.p5_download", server.base_url, tinker_path, str(dest)],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"download subprocess failed:\n{proc.stderr[-3000:]}")
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        got = child["files"].get("adapter_model.safetensors")
        if got != size:
            raise RuntimeError(f"extracted adapter_model.safetensors has {got} bytes, want {size}")
        shutil.rmtree(dest, ignore_errors=True)

        copy = work / "copy.tar"
        os.sync()
        started = time.perf_counter()
        shutil.copyfile(archive, copy)
        copy_s = time.perf_counter() - started
        copy.unlink()
        rest.delete_checkpoint_from_tinker_path(tinker_path).result()
    finally:
        close_quietly(service)
    growth_mb = (child["peak"] - child["baseline"]) / 1e6
    dl_mbps = archive_bytes / child["seconds"] / 1e6
    copy_mbps = archive_bytes / copy_s / 1e6
    detail = (
        f"peak RSS +{growth_mb:.1f} MB over a {child['baseline'] / 1e6:.0f} MB baseline; "
        f"download+extract {dl_mbps:.0f} MB/s vs plain copy {copy_mbps:.0f} MB/s "
        f"({dl_mbps / copy_mbps:.2f}×); archive {archive_bytes / 2**20:.0f} MiB"
    )
    extra = {
        "archive_bytes": archive_bytes,
        "child": child,
        "copy_s": copy_s,
        "download_mb_per_s": dl_mbps,
        "copy_mb_per_s": copy_mbps,
    }
    memory = Row(
        key=f"{KEY}-mem",
        title=f"{TITLE} (peak RSS growth, {archive_bytes / 2**30:.2f} GiB archive)",
        value=growth_mb,
        unit=UNIT,
        op=OP,
        target=TARGET,
        detail=detail,
        extra=extra,
    )
    speed = Row(
        key=f"{KEY}-speed",
        title="download+extract throughput (vs plain copy of the archive)",
        value=dl_mbps / copy_mbps,
        unit="×",
        op=">=",
        target=SPEED_TARGET,
        detail=f"download+extract {dl_mbps:.0f} MB/s, shutil.copyfile {copy_mbps:.0f} MB/s",
        extra={"download_mb_per_s": dl_mbps, "copy_mb_per_s": copy_mbps},
    )
    return [memory, speed]


if __name__ == "__main__":
    print(json.dumps(_child(*sys.argv[1:4])))
