import torch

from training.fewshot.protonet import proto_logits, prototypes, squared_euclidean


def test_prototypes_are_class_means_hand_case():
    emb = torch.tensor([[0.0, 0.0], [2.0, 4.0], [1.0, 1.0], [3.0, 3.0], [5.0, -1.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    expected = torch.tensor([[1.0, 2.0], [3.0, 1.0]])
    torch.testing.assert_close(prototypes(emb, labels, 2), expected)


def test_logits_are_negative_squared_euclidean_distances():
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    query = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    logits = proto_logits(support, torch.tensor([0, 1]), query, 2)
    torch.testing.assert_close(logits, torch.tensor([[-2.0, -2.0], [-9.0, -1.0]]))
    torch.testing.assert_close(squared_euclidean(query, support), -logits)


def test_one_shot_gradient_is_finite():
    # 1-shot support points sit on their prototype (distance 0), where cdist's gradient is NaN.
    emb = torch.randn(3, 4, requires_grad=True)
    logits = proto_logits(emb, torch.arange(3), emb, 3)
    torch.nn.functional.cross_entropy(logits, torch.arange(3)).backward()
    assert torch.isfinite(emb.grad).all()
