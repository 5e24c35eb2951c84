"""The loader order is a pure function of the step: ranks get disjoint samples; a resumed run sees the same ones."""

from kamado.train.data import SampleOrder, batch_indices


def test_ranks_take_disjoint_samples_and_epochs_cover_everything():
    world, mb, ga = 2, 3, 2
    seen = []
    for step in range(4):
        for micro in range(ga):
            a = batch_indices(step, micro, ga, 0, world, mb)
            b = batch_indices(step, micro, ga, 1, world, mb)
            assert not set(a) & set(b)
            seen += a + b
    assert sorted(seen) == list(range(4 * ga * world * mb))
    order = SampleOrder(10, seed=3)
    assert sorted(order(i) for i in range(10)) == list(range(10))
    assert sorted(order(i) for i in range(10, 20)) == list(range(10))
    assert [order(i) for i in range(10)] != [order(i) for i in range(10, 20)]  # a new permutation per epoch
    assert [SampleOrder(10, 3)(i) for i in range(25)] == [SampleOrder(10, 3)(i) for i in range(25)]
