import torch

from edgekd.config import DataConfig
from edgekd.data.datasets import TensorImageSet, data_fingerprint
from edgekd.distill.teacher_cache import TeacherCache, cache_key
from edgekd.models import ModelSpec, build_model, load_model, save_model
from edgekd.models.taps import FeatureTaps
from edgekd.ondevice.files import sha256_file

SPEC = ModelSpec("resnet8", 10, 1, 16)
TRANSFORMS = {"image_size": 16, "mean": [0.3], "std": [0.4], "augment": None}


def _images(n=40):
    g = torch.Generator().manual_seed(0)
    return TensorImageSet(
        torch.rand(n, 1, 16, 16, generator=g), torch.randint(10, (n,), generator=g), 16, 1, (0.3,), (0.4,)
    )


def _teacher(tmp_path, seed):
    torch.manual_seed(seed)
    path = tmp_path / "teacher.pt"
    save_model(path, build_model("resnet8", 10, 1), SPEC)
    teacher, _ = load_model(path)
    return teacher, cache_key(sha256_file(path), data_fingerprint(DataConfig(image_size=16), 0), TRANSFORMS, ["layer2"])


def test_cached_outputs_match_the_live_teacher_for_shuffled_batches(tmp_path):
    teacher, key = _teacher(tmp_path, 0)
    images = _images()
    cache = TeacherCache.compute(key, teacher, images, ["layer2"], batch_size=16, device="cpu")
    assert cache.built and cache.logits.shape == (40, 10) and cache.features["layer2"].shape == (40, 32, 8, 8)
    for x, _, idx in images.batches(8, shuffle=True, generator=torch.Generator().manual_seed(1)):
        with FeatureTaps(teacher, ["layer2"]) as taps, torch.no_grad():
            live = teacher(x)
        logits, feats = cache.lookup(idx)
        torch.testing.assert_close(logits, live, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(feats["layer2"], taps.features["layer2"], atol=1e-5, rtol=1e-5)
    assert all(not m._forward_hooks for m in teacher.modules())


def test_the_cache_is_reused_and_invalidated_when_the_teacher_changes(tmp_path):
    images = _images()
    path = tmp_path / "run" / "teacher_cache.pt"
    teacher, key = _teacher(tmp_path, 0)
    first = TeacherCache.load_or_compute(path, key, teacher, images, ["layer2"], 16, "cpu")
    again = TeacherCache.load_or_compute(path, key, teacher, images, ["layer2"], 16, "cpu")
    assert first.built and not again.built
    torch.testing.assert_close(again.logits, first.logits)

    new_teacher, new_key = _teacher(tmp_path, 1)  # other weights in the same checkpoint path
    assert new_key != key
    rebuilt = TeacherCache.load_or_compute(path, new_key, new_teacher, images, ["layer2"], 16, "cpu")
    assert rebuilt.built
    x, _, idx = next(images.batches(40))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.lookup(idx)[0], new_teacher(x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(rebuilt.logits, first.logits)
    assert not TeacherCache.load_or_compute(path, new_key, new_teacher, images, ["layer2"], 16, "cpu").built


def test_every_key_part_changes_the_key():
    base = dict(teacher_sha256="a" * 64, data_fingerprint="d1", transforms=TRANSFORMS, layers=["layer2"])
    key = cache_key(**base)
    for change in [
        dict(teacher_sha256="b" * 64),
        dict(data_fingerprint="d2"),
        dict(transforms={**TRANSFORMS, "image_size": 32}),
        dict(layers=["layer3"]),
    ]:
        assert cache_key(**{**base, **change}) != key
    assert cache_key(**base) == key
