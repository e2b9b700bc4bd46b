"""Sky masks and loss weights on constructed images; the cached masks in a tiny store."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest
import torch

from galmoco.data.masks import (
    MaskConfig,
    ensure_sky_masks,
    mask_key,
    pixel_weights,
    positive_flux_weights,
    segmentation_sky,
    sky_pixel_weights,
)
from galmoco.errors import GalmocoError
from galmoco.io import store as store_module


def _distance_to(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of ``mask`` (brute force)."""
    points = np.argwhere(mask)
    grid = np.indices(mask.shape).reshape(2, -1).T
    return np.sqrt(((grid[:, None, :] - points[None, :, :]) ** 2).sum(-1)).min(1).reshape(mask.shape)


@pytest.mark.parametrize("with_weights", [True, False])
def test_segmentation_marks_source_and_dilation_ring(rng, make_stamp, with_weights):
    image, weight = make_stamp(rng, amplitude=400.0)
    bare = segmentation_sky(image, weight if with_weights else None, MaskConfig(dilate=0))
    sky = segmentation_sky(image, weight if with_weights else None, MaskConfig(dilate=2))
    assert sky.shape == (64, 64) and sky.dtype == bool
    y, x = np.mgrid[:64, :64]
    r = np.hypot(x - 31.5, y - 31.5)
    assert not bare[r < 6].any()  # the galaxy's core (>= 6 sigma_sky in every band) is source
    for corner in (sky[:8, :8], sky[:8, -8:], sky[-8:, :8], sky[-8:, -8:]):
        assert corner.all()
    # dilation by 2: exactly the pixels within 2 px of the undilated segments become non-sky
    assert np.array_equal(~sky, _distance_to(~bare) <= 2)
    assert (~sky).sum() > (~bare).sum()


def test_segmentation_of_empty_sky_is_sky(rng, make_stamp):
    image, weight = make_stamp(rng, amplitude=0.0)
    assert segmentation_sky(image, weight, MaskConfig()).mean() > 0.95


def test_segmentation_treats_no_data_as_sky(rng, make_stamp):
    image, weight = make_stamp(rng, amplitude=400.0)
    weight = weight.copy()
    weight[:, :, 28:36] = 0.0  # a vertical strip through the galaxy without data
    sky = segmentation_sky(image, weight, MaskConfig(dilate=0))
    assert sky[:, 28:36].all()
    assert not sky[30:34, 24:27].all()


def test_sky_pixel_weights_numpy_and_tensor():
    sky = np.ones((2, 4, 4), dtype=bool)
    sky[0, 1:3, 1:3] = False  # 4 source pixels of 16
    weights = sky_pixel_weights(sky, 0.1)
    assert weights.dtype == np.float32
    assert np.allclose(weights.mean(axis=(1, 2)), 1.0)
    mean = (4 * 1.0 + 12 * 0.1) / 16
    assert weights[0, 1, 1] == pytest.approx(1.0 / mean) and weights[0, 0, 0] == pytest.approx(0.1 / mean)
    assert np.allclose(weights[1], 1.0)  # all sky: uniform
    tensor = sky_pixel_weights(torch.from_numpy(sky), 0.1)
    assert tensor.dtype == torch.float32 and np.allclose(tensor.numpy(), weights)


def test_sky_pixel_weights_validity_and_all_zero():
    sky = np.zeros((2, 4, 4), dtype=bool)
    valid = np.ones((2, 4, 4), dtype=bool)
    valid[0, :, :2] = False
    valid[1] = False
    weights = sky_pixel_weights(sky, 0.0, valid)
    assert np.all(weights[0, :, :2] == 0) and np.allclose(weights[0, :, 2:], 2.0)
    assert np.all(weights[1] == 0)  # nothing valid: zeros, not NaN
    assert np.all(sky_pixel_weights(np.ones((3, 3), dtype=bool), 0.0) == 0)


def test_positive_rule_zeroes_non_positive_pixels():
    images = torch.ones(1, 2, 2, 2)
    images[0, :, 0, 0] = -1.0  # negative in both bands
    images[0, 0, 0, 1] = 0.0
    images[0, 1, 0, 1] = 0.0  # zero sum
    images[0, 0, 1, 0] = -0.5  # band sum still positive
    weights = positive_flux_weights(images)
    assert weights.shape == (1, 1, 2, 2)
    assert torch.allclose(weights[0, 0], torch.tensor([[0.0, 0.0], [2.0, 2.0]]))
    assert weights.mean().item() == pytest.approx(1.0)


def test_pixel_weights_by_rule():
    images = torch.randn(3, 2, 8, 8)
    assert torch.equal(pixel_weights(images, None, MaskConfig(rule="none")), torch.ones(3, 1, 8, 8))
    positive = pixel_weights(images, None, MaskConfig(rule="positive"))
    assert torch.equal(positive, positive_flux_weights(images))
    mask = torch.rand(3, 8, 8, dtype=torch.float64)
    out = pixel_weights(images, mask, MaskConfig())
    assert out.shape == (3, 1, 8, 8) and out.dtype == torch.float32
    assert torch.allclose(out[:, 0], mask.float())
    with pytest.raises(GalmocoError, match="ensure_sky_masks"):
        pixel_weights(images, None, MaskConfig())


def test_mask_config_validation():
    with pytest.raises(GalmocoError, match="rule"):
        MaskConfig(rule="circle")
    with pytest.raises(GalmocoError, match="sky_weight"):
        MaskConfig(sky_weight=2.0)
    assert mask_key(MaskConfig()) != mask_key(MaskConfig(dilate=3))


def _expected(path, config):
    with h5py.File(path, "r") as h5:
        images, weights = h5["images"][:], h5["weights"][:]
    return np.stack([
        sky_pixel_weights(segmentation_sky(im, w, config), config.sky_weight, (w > 0).any(axis=0))
        for im, w in zip(images, weights, strict=True)
    ])


def test_ensure_sky_masks_caches_and_is_idempotent(tiny_store):
    config = MaskConfig()
    name = ensure_sky_masks(tiny_store, config, block=4)
    assert name == mask_key(config) and name.startswith("masks/")
    with h5py.File(tiny_store, "r") as h5:
        cached = h5[name][:]
        assert h5[name].dtype == np.float32 and h5[name].chunks == (1, 32, 32)
        assert h5[name].attrs["thresh"] == 1.5
        assert list(h5["masks"]) == [name.split("/")[1]]  # no temporary left behind
    assert cached.shape == (6, 32, 32)
    assert np.allclose(cached, _expected(tiny_store, config))
    assert np.allclose(cached.mean(axis=(1, 2)), 1.0)
    assert np.all(cached[3, :, :4] == 0)  # the strip without data
    with h5py.File(tiny_store, "a") as h5:
        h5[name][0] = 7.0  # a sentinel: a second call must not recompute
    assert ensure_sky_masks(tiny_store, config) == name
    with h5py.File(tiny_store, "r") as h5:
        assert np.all(h5[name][0] == 7.0)
        # another run reading the store (h5py holds a lock) does not stop a run that finds the cache
        assert ensure_sky_masks(tiny_store, config) == name


def test_ensure_sky_masks_replaces_stale_partial(tiny_store):
    config = MaskConfig(sky_weight=0.0, dilate=1)
    tmp = mask_key(config).split("/")[1] + ".partial"
    with h5py.File(tiny_store, "a") as h5:
        h5.create_dataset(f"masks/{tmp}", data=np.zeros(3))  # an interrupted earlier run
    name = ensure_sky_masks(tiny_store, config)
    with h5py.File(tiny_store, "r") as h5:
        assert tmp not in h5["masks"]
        assert np.allclose(h5[name][:], _expected(tiny_store, config))


def test_ensure_sky_masks_on_the_fly_rules(tiny_store):
    assert ensure_sky_masks(tiny_store, MaskConfig(rule="positive")) is None
    assert ensure_sky_masks(tiny_store, MaskConfig(rule="none")) is None
    with h5py.File(tiny_store, "r") as h5:
        assert "masks" not in h5


@pytest.mark.slow
def test_ensure_sky_masks_with_workers(tiny_store):
    name = ensure_sky_masks(tiny_store, MaskConfig(), workers=2, block=2)
    with h5py.File(tiny_store, "r") as h5:
        assert np.allclose(h5[name][:], _expected(tiny_store, MaskConfig()))


def test_cached_mask_loads_through_the_dataset(tiny_store):
    store = pytest.importorskip("galmoco.io.store")
    name = ensure_sky_masks(tiny_store, MaskConfig())
    item = store.CutoutDataset(tiny_store, fields=("image", name))[2]
    with h5py.File(tiny_store, "r") as h5:
        assert np.allclose(item["mask"].numpy(), h5[name][2])


def test_ensure_sky_masks_bad_stores(tmp_path, tiny_store):
    with pytest.raises(GalmocoError, match="nowhere.h5: no such store"):
        ensure_sky_masks(tmp_path / "nowhere.h5", MaskConfig())
    assert not (tmp_path / "nowhere.h5").exists()  # not created by the attempt
    with h5py.File(tiny_store, "a") as h5:
        h5.attrs["complete"] = False
    with pytest.raises(GalmocoError, match="incomplete"):
        ensure_sky_masks(tiny_store, MaskConfig())


_HOLDER = "import h5py, sys\nh5 = h5py.File(*sys.argv[1:])\nprint('open', flush=True)\nsys.stdin.readline()\n"


def _hold(path, mode: str = "a") -> subprocess.Popen:
    """Another real process holding the store open (``"a"``: for writing, as one caching its sky masks
    does; ``"r"``: reading, as a training run does) until a line arrives on its stdin."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "open\n"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.write("\n")
    proc.stdin.flush()


def test_a_run_waits_for_another_process_writing_the_store(tiny_store):
    holder = _hold(tiny_store)
    try:
        threading.Timer(0.3, _release, (holder,)).start()
        t0 = time.monotonic()
        dataset = store_module.CutoutDataset(tiny_store, fields=("image",))  # waits, then reads
        assert time.monotonic() - t0 >= 0.25 and len(dataset) == 6
        holder.wait(10)
        holder = _hold(tiny_store)
        threading.Timer(0.3, _release, (holder,)).start()
        name = ensure_sky_masks(tiny_store, MaskConfig())  # waits, then computes
    finally:
        holder.kill()
        holder.wait()
    with h5py.File(tiny_store, "r") as h5:
        assert np.allclose(h5[name][:], _expected(tiny_store, MaskConfig()))


def test_a_store_held_too_long_is_named_in_one_line(tiny_store, monkeypatch):
    holder = _hold(tiny_store, "r")
    try:
        with pytest.raises(GalmocoError, match=r"tiny\.h5: another process has it open \(reading or "
                                               r"writing\); waited 0.2 s .*cache them before starting runs"):
            ensure_sky_masks(tiny_store, MaskConfig(), wait_s=0.2)
    finally:
        holder.kill()
        holder.wait()
    holder = _hold(tiny_store, "a")
    try:
        monkeypatch.setattr(store_module, "LOCK_WAIT_S", 0.2)
        with pytest.raises(GalmocoError, match=r"tiny\.h5: another process is writing it; waited 0.2 s"):
            store_module.CutoutStore(tiny_store)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_two_processes_caching_the_same_masks_both_succeed(tmp_path, rng):
    from tests.data.conftest import noisy_stamp, write_store
    stamps = [noisy_stamp(rng, size=32, amplitude=a) for a in np.linspace(0, 1000, 300)]
    path = write_store(tmp_path / "s.h5", np.stack([s[0] for s in stamps]), np.stack([s[1] for s in stamps]))
    code = "import sys\nfrom galmoco.data.masks import MaskConfig, ensure_sky_masks\n" \
           "print(ensure_sky_masks(sys.argv[1], MaskConfig(), block=16))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-500:] for r in results]
    assert [r[0].strip() for r in results] == [mask_key(MaskConfig())] * 2
    with h5py.File(path, "r") as h5:
        assert list(h5["masks"]) == [mask_key(MaskConfig()).split("/")[1]]
