"""Fine-tuning a pretrained classifier: head first, backbone frozen then slower."""

import torch
import torchvision.models as tvm

from edgekd.distill.finetune import FineTune, param_groups


def test_finetune_freezes_the_backbone_then_trains_it_slower():
    model = tvm.resnet18(weights=None, num_classes=3)
    objective = FineTune(model, freeze_epochs=1)
    groups = param_groups(model, 0.1)
    assert groups[0]["name"] == "fc" and groups[1]["lr_scale"] == 0.1
    opt = torch.optim.SGD(groups, lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    model.train()
    for epoch in range(2):
        objective.begin_epoch(epoch, 2)
        opt.zero_grad(set_to_none=True)
        objective.loss(model, x, y, torch.arange(4))[0].backward()
        opt.step()
        if epoch == 0:  # frozen: only the head moved, BatchNorm statistics too stayed
            after = model.state_dict()
            assert not torch.equal(after["fc.weight"], before["fc.weight"])
            assert all(torch.equal(after[k], before[k]) for k in before if not k.startswith("fc."))
    assert not torch.equal(model.state_dict()["conv1.weight"], before["conv1.weight"])
