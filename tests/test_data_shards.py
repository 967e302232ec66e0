"""WebDataset shards: `lictrain data prepare`, sharded epochs over ranks and workers, exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_images
from lictrain.cli.main import main
from lictrain.data.prepare import prepare_shards
from lictrain.data.shards import ShardLoader, read_index, round_robin_skips
from lictrain.errors import ConfigError, DataError


def colour_folder(folder: Path, n: int, size: tuple[int, int] = (40, 32)) -> None:
    """Photo ``i`` is a flat PNG of value ``i`` (a crop names its photo)."""
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", size, (i, i, i)).save(folder / f"p{i:03d}.png")


def ids(batches: list[torch.Tensor]) -> list[int]:
    return [int(c[0, 0, 0]) for b in batches for c in b]


def run_epoch(loader: ShardLoader, epoch: int, start: int = 0) -> list[torch.Tensor]:
    loader.set_epoch(epoch, start)
    return list(loader)


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    colour_folder(tmp_path / "src" / "train", 40)
    colour_folder(tmp_path / "src" / "test", 2)
    summary = prepare_shards(tmp_path / "src", tmp_path / "out", shard_samples=5, show_progress=False)
    assert (summary.shards, summary.samples, summary.test_photos) == (8, 40, 2)
    return tmp_path / "out"


def test_prepare_writes_tar_shards_an_index_and_the_test_photos(shards: Path) -> None:
    import tarfile

    index = read_index(str(shards))
    assert [s.samples for s in index.shards] == [5] * 8 and index.tile is None
    with tarfile.open(shards / "train-000000.tar") as tar:
        names = tar.getnames()
    assert sorted(names[:2]) == ["000000000.name.txt", "000000000.png"]
    assert sorted(p.name for p in (shards / "test").iterdir()) == ["p000.png", "p001.png"]


def test_prepare_never_writes_into_a_folder_that_has_files(shards: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="never overwrites"):
        prepare_shards(tmp_path / "src", shards)


def test_an_epoch_is_one_pass_split_over_ranks_and_workers(shards: Path) -> None:
    index = read_index(str(shards))
    seen = []
    for rank in range(2):
        loader = ShardLoader(index, 16, 5, 1, None, seed=0, rank=rank, world_size=2, num_workers=2)
        batches = run_epoch(loader, 3)
        assert len(batches) == len(loader) == 4 and batches[0].dtype == torch.uint8
        seen += ids(batches)
    assert sorted(seen) == list(range(40))  # every sample once, on one rank, in one worker
    again = ShardLoader(index, 16, 5, 1, None, seed=0, rank=0, world_size=2, num_workers=2)
    assert ids(run_epoch(again, 4)) != ids(run_epoch(again, 3))  # reshuffled per epoch


def test_shard_epochs_resume_exactly_and_match_inline_reading(shards: Path) -> None:
    index = read_index(str(shards))
    loader = ShardLoader(index, 16, 4, 2, None, seed=1, num_workers=2)
    full = run_epoch(loader, 0)
    assert len(full) == 20
    inline = run_epoch(ShardLoader(index, 16, 4, 2, None, seed=1, num_workers=0), 0)
    assert sorted(ids(inline)) == sorted(ids(full)) == sorted(list(range(40)) * 2)
    for start in (1, 7, 19):
        tail = run_epoch(loader, 0, start=start)
        assert len(tail) == 20 - start and all(torch.equal(a, b) for a, b in zip(full[start:], tail, strict=True))


def test_round_robin_accounting() -> None:
    assert round_robin_skips([3, 1, 2], 4) == [2, 1, 1]
    assert round_robin_skips([3, 1, 2], 6) == [3, 1, 2]
    assert round_robin_skips([2, 2], 0) == [0, 0]


def test_tiles_are_lossless_and_decode_free(tmp_path: Path) -> None:
    write_images(tmp_path / "src", 3, size=(100, 70))
    prepare_shards(tmp_path / "src", tmp_path / "tiles", tile=32, show_progress=False)
    index = read_index(str(tmp_path / "tiles"))
    assert index.tile == 32 and index.samples == 2 * 6  # 2 training photos x (2 rows x 3 columns)
    loader = ShardLoader(index, 32, 4, 1, None, seed=0)
    batch = run_epoch(loader, 0)[0]
    source = np.asarray(Image.open(tmp_path / "src" / "img000.png").convert("RGB"))
    tiles = {source[r:r + 32, c:c + 32].tobytes() for r in (0, 32) for c in (0, 32, 64)}
    flips = [np.ascontiguousarray(t) for t in (lambda a: [a, a[:, ::-1], a[::-1], a[::-1, ::-1]])(
        batch[0].permute(1, 2, 0).numpy())]
    assert any(f.tobytes() in tiles for f in flips) or len(tiles) == 6


def test_bad_index_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataError, match="not a lictrain shard index"):
        read_index(str(tmp_path))
    with pytest.raises(DataError, match="cannot read the shard index"):
        read_index(str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_train_from_shards_end_to_end(tmp_path: Path) -> None:
    write_images(tmp_path / "src" / "train", 12, size=(96, 80))
    write_images(tmp_path / "src" / "test", 2, size=(96, 80))
    assert main(["data", "prepare", str(tmp_path / "src"), str(tmp_path / "sh"), "--shard-samples", "4"]) == 0
    assert main(["train", "--dataset", str(tmp_path / "sh"), "--model", "bmshj2018-factorized", "--patch-size", "64",
                 "--test-patch-size", "64", "--batch-size", "4", "--epochs", "1", "--no-final-eval",
                 "--wandb-mode", "disabled", "--save-path", str(tmp_path / "run")]) == 0
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "finished"


def test_uneven_shards_resume_exactly_from_any_batch(tmp_path: Path) -> None:
    colour_folder(tmp_path / "src", 40)
    prepare_shards(tmp_path / "src", tmp_path / "out", shard_samples=3, show_progress=False)  # 36 train: 12 x 3
    colour_folder(tmp_path / "src2", 31)
    prepare_shards(tmp_path / "src2", tmp_path / "odd", shard_samples=4, show_progress=False)  # 27: 6 x 4 + 3
    for out in ("out", "odd"):
        index = read_index(str(tmp_path / out))
        loader = ShardLoader(index, 16, 4, 1, None, seed=1, num_workers=3)
        full = run_epoch(loader, 2)
        for start in range(len(full)):
            tail = run_epoch(loader, 2, start=start)
            assert all(torch.equal(a, b) for a, b in zip(full[start:], tail, strict=True)), (out, start)


def test_shards_stream_from_a_url_with_their_test_photos(shards: Path) -> None:
    import functools
    import http.server
    import threading

    from lictrain.data.loaders import load_test_crops

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shards))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        index = read_index(url)
        assert index.samples == 40 and index.shards[0].url == f"{url}/train-000000.tar"
        loader = ShardLoader(index, 16, 5, 1, None, seed=0, num_workers=2)
        assert sorted(ids(run_epoch(loader, 0))) == list(range(40))
        crops = load_test_crops(url, 16)
        assert [c.name for c in crops] == ["p000.png", "p001.png"] and int(crops[1].pixels.max()) == 1
    finally:
        server.shutdown()
