import pytest
import torch
from torch.nn import functional as F

from edgekd.config import AugmentConfig
from edgekd.data.augment import BatchAugment


def _aug(seed=0, **kw) -> BatchAugment:
    return BatchAugment(AugmentConfig(**kw), num_classes=10, generator=torch.Generator().manual_seed(seed))


def _labelled_images(n=10, c=1, size=16):
    """Constant images whose pixel value is their label, so a mixed image's mean is its target's expectation."""
    labels = torch.arange(n) % 10
    return labels.float().view(-1, 1, 1, 1).expand(n, c, size, size).clone(), labels


def test_no_random_op_is_deterministic_and_passes_through():
    aug = _aug()
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4)
    assert aug.deterministic and not aug.mixes
    out, targets = aug(x, y)
    assert out is x and targets is y
    assert not _aug(hflip=True).deterministic and not _aug(random_erasing=0.1).deterministic


def test_same_seed_same_batch_other_seed_other_batch():
    kw = dict(random_crop=True, hflip=True, randaugment=True, random_erasing=0.5, mixup_alpha=0.4, cutmix_alpha=1.0)
    x, y = torch.randn(16, 3, 16, 16), torch.randint(10, (16,))
    a1, t1 = _aug(1, **kw)(x, y)
    a2, t2 = _aug(1, **kw)(x, y)
    a3, _ = _aug(2, **kw)(x, y)
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(t1, t2)
    assert not torch.equal(a1, a3)


def test_random_crop_is_a_window_of_the_reflect_padded_image():
    x = torch.randn(8, 2, 16, 16)
    out, _ = _aug(random_crop=True)(x, torch.zeros(8, dtype=torch.long))
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")  # pad = 16 // 8
    offsets = set()
    for i in range(8):
        found = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(out[i], padded[i, :, dy : dy + 16, dx : dx + 16])
        ]
        assert found
        offsets.add(found[0])
    assert len(offsets) > 1  # per-image offsets


def test_hflip_flips_some_images_and_keeps_the_others():
    x = torch.randn(32, 1, 8, 8)
    out, _ = _aug(hflip=True)(x, torch.zeros(32, dtype=torch.long))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 4 < sum(flipped) < 28


@pytest.mark.parametrize("kind", ["mixup_alpha", "cutmix_alpha"])
def test_mixing_returns_soft_targets_that_match_the_images(kind):
    x, y = _labelled_images()
    aug = _aug(3, **{kind: 1.0})
    assert aug.mixes
    seen_mixed = False
    for _ in range(5):
        out, targets = aug(x, y)
        assert targets.shape == (10, 10) and targets.dtype == torch.float32
        torch.testing.assert_close(targets.sum(1), torch.ones(10))
        expected = (targets * torch.arange(10.0)).sum(1)  # expected pixel value under the mixed target
        torch.testing.assert_close(out.mean(dim=(1, 2, 3)), expected, atol=1e-5, rtol=0)
        seen_mixed |= bool((targets.max(1).values < 1).any())
        loss = F.cross_entropy(torch.zeros(10, 10, requires_grad=True), targets)  # the hard CE takes soft targets
        assert torch.isfinite(loss)
    assert seen_mixed


def test_cutmix_pastes_a_box():
    x, y = _labelled_images(n=6, size=16)
    out, targets = _aug(5, cutmix_alpha=1.0)(x, y)
    for img, t in zip(out, targets):
        values = set(img.unique().tolist())
        assert values <= {float(k) for k in range(10) if t[k] > 0}


def test_random_erasing_zeroes_one_rectangle_per_chosen_image():
    x = torch.ones(16, 3, 16, 16)
    out, _ = _aug(random_erasing=1.0)(x, torch.zeros(16, dtype=torch.long))
    for img in out:
        zero = (img == 0).all(0)
        rows, cols = zero.any(1).nonzero().squeeze(1), zero.any(0).nonzero().squeeze(1)
        assert len(rows) and len(cols)
        box = zero[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.all() and zero.sum() == box.numel()  # one filled rectangle
        assert 0.02 * 256 * 0.5 <= box.numel() <= 0.33 * 256 * 1.5  # rounding of the sides


def test_randaugment_stays_in_the_pixel_range_and_changes_images():
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    unit = torch.rand(32, 3, 16, 16)
    unit = (unit * 255).round() / 255  # on the uint8 grid, so unchanged images come back exactly
    x = (unit - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    aug = BatchAugment(
        AugmentConfig(randaugment=True), 10, mean=mean, std=std, generator=torch.Generator().manual_seed(0)
    )
    out, _ = aug(x, torch.zeros(32, dtype=torch.long))
    back = out * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert back.min() >= -1e-5 and back.max() <= 1 + 1e-5
    changed = [not torch.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x)]
    assert 8 < sum(changed) <= 32


def test_randaugment_without_normalisation_stats_keeps_each_image_range():
    x = torch.randn(16, 1, 16, 16) * 3 + 1
    out, _ = _aug(randaugment=True)(x, torch.zeros(16, dtype=torch.long))
    lo, hi = x.amin(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3))
    assert (out.amin(dim=(1, 2, 3)) >= lo - 1e-4).all() and (out.amax(dim=(1, 2, 3)) <= hi + 1e-4).all()


def test_reseed_restarts_the_stream():
    kw = dict(hflip=True, random_crop=True, mixup_alpha=0.3)
    x, y = torch.randn(8, 1, 16, 16), torch.arange(8)
    used = _aug(99, **kw)
    used(x, y)
    used.reseed(7)
    got = used(x, y)
    expected = _aug(7, **kw)(x, y)
    torch.testing.assert_close(got[0], expected[0])
    torch.testing.assert_close(got[1], expected[1])
