"""ItemDropout and draw_items_normal: a sample's randomness does not depend on its batch or its padding."""

import pytest
import torch

from vmas_diffusion.errors import InputError
from vmas_diffusion.models.generators.base import draw_items_normal
from vmas_diffusion.modules.item_randomness import ItemDropout, per_item_dropout


def test_item_dropout_masks_belong_to_the_item():
    drop = ItemDropout(0.25).train()
    x = torch.ones(3, 40, 16)
    with per_item_dropout([11, 22, 33]):
        batch = drop(x)
        second = drop(x)  # the next call of the same layer: new masks
        chunk = drop(x[:, :8], offset=8)  # a chunk starting at frame 8: its own masks
    with per_item_dropout([22]):
        alone = drop(x[1:2, :25])  # item 22 alone, shorter padding
    assert torch.equal(alone[0], batch[1, :25])
    assert not torch.equal(batch, second) and not torch.equal(chunk, batch[:, :8])
    kept = (batch > 0).float().mean()
    assert abs(float(kept) - 0.75) < 0.03  # 1920 draws
    assert torch.allclose(batch[batch > 0], torch.full_like(batch[batch > 0], 1 / 0.75))
    rows = (batch > 0).float().flatten(1)
    assert float(torch.corrcoef(rows).fill_diagonal_(0).abs().max()) < 0.1  # items draw independently
    with pytest.raises(InputError, match="2 item seeds for a batch of 3"), per_item_dropout([1, 2]):
        drop(x)


def test_item_dropout_is_nn_dropout_outside_training_and_the_context():
    drop = ItemDropout(0.5)
    assert drop.state_dict() == {} and isinstance(drop, torch.nn.Dropout)
    x = torch.randn(2, 5, 4)
    with per_item_dropout([1, 2]):
        assert torch.equal(drop.eval()(x), x)
    torch.manual_seed(0)
    a = drop.train()(x)
    torch.manual_seed(0)
    assert torch.equal(a, torch.nn.functional.dropout(x, 0.5, True))


def test_item_noise_does_not_depend_on_the_padding():
    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    long = draw_items_normal((2, 16, 50), gens(1, 2), time_dim=-1)
    short = draw_items_normal((1, 16, 30), gens(2), time_dim=-1)
    assert torch.equal(short[0], long[1, :, :30])
    big = draw_items_normal((4, 20000), gens(3, 4, 5, 6), time_dim=1)
    assert abs(float(big.mean())) < 0.02 and abs(float(big.std()) - 1) < 0.02
