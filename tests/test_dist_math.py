"""Data-parallel training's arithmetic, with the ranks as threads (ThreadComm): K workers on
their slices of the global batch equal one process on the whole batch; negative controls show
the tests can fail."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import convscope as cs
import convscope.distributed as dist
from convscope.data import Augment, BatchLoader
from convscope.train import evaluate

from dist_common import data_parallel, make_data, make_model, max_diff, single_process

AUG = Augment(crop_padding=1, hflip=True)


# -- slicing ------------------------------------------------------------------------------------
@given(st.integers(0, 70), st.integers(1, 5))
@settings(max_examples=max(10, settings.default.max_examples // 2), deadline=None)
def test_shard_bounds_are_array_split(n: int, k: int) -> None:
    parts = np.array_split(np.arange(n), k)
    for r in range(k):
        start, stop = dist.shard_bounds(n, k, r)
        assert np.array_equal(np.arange(start, stop), parts[r])


def test_split_sizes_of_the_design_note() -> None:
    assert dist.split_sizes(16, 3) == [6, 5, 5]
    assert dist.split_sizes(13, 3) == [5, 4, 4]
    assert dist.split_sizes(2, 3) == [1, 1, 0]
    with pytest.raises(ValueError, match="rank must be in 0..2, got 3"):
        dist.shard_bounds(10, 3, 3)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("augment", [None, AUG])
def test_global_batches_concatenate_to_the_loaders_batches(k: int, augment: Augment | None) -> None:
    x, y = make_data(37)
    ref = list(BatchLoader(x, y, 10, seed=5, augment=augment))
    parts = dist.ThreadComm.run(k, lambda c: [(b.x, b.y, b.start, b.stop, b.total) for b in
                                              dist.global_batches(BatchLoader(
                                                  x, y, 10, seed=5, augment=augment), c)])
    assert len(parts[0]) == len(ref) == 4
    for i, (xb, yb) in enumerate(ref):
        assert np.array_equal(np.concatenate([p[i][0] for p in parts]), xb)
        assert np.array_equal(np.concatenate([p[i][1] for p in parts]), yb)
        assert [p[i][3] - p[i][2] for p in parts] == dist.split_sizes(len(yb), k)


# -- the communicators ---------------------------------------------------------------------------
def test_thread_comm_collectives() -> None:
    def body(c: dist.ThreadComm) -> tuple:
        a = np.array([c.rank + 1.0, -c.rank])
        s = c.allreduce_(a.copy())
        lo = c.allreduce_(a.copy(), "min")
        hi = c.allreduce_(a.copy(), "max")
        b = c.bcast_(np.full(2, float(c.rank)), root=1)
        return s, lo, hi, b, c.allgather_obj(c.rank * 10), c.bcast_obj(f"r{c.rank}")

    for r, (s, lo, hi, b, g, o) in enumerate(dist.ThreadComm.run(3, body)):
        assert s.tolist() == [6.0, -3.0] and lo.tolist() == [1.0, -2.0]
        assert hi.tolist() == [3.0, 0.0] and b.tolist() == [1.0, 1.0]
        assert g == [0, 10, 20] and o == "r0"


def test_local_comm_is_the_identity_and_checks_its_input() -> None:
    c = dist.Local()
    a = np.arange(3.0)
    assert c.allreduce_(a) is a and a.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="op must be one of sum, min, max, got 'mean'"):
        c.allreduce_(a, "mean")
    with pytest.raises(TypeError, match="C-contiguous NumPy array"):
        c.allreduce_(np.arange(6.0)[::2])
    assert dist.init().size == 1  # not under mpirun


def test_a_raising_rank_stops_the_others_instead_of_hanging() -> None:
    def body(c: dist.ThreadComm) -> None:
        if c.rank == 1:
            raise RuntimeError("rank 1 failed")
        c.allreduce_(np.zeros(3))  # would wait forever for rank 1

    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="rank 1 failed"):
        dist.ThreadComm.run(3, body, timeout=10)
    assert time.perf_counter() - t0 < 5


# -- the reducer ---------------------------------------------------------------------------------
def test_gradients_are_views_into_one_flat_buffer() -> None:
    model = make_model(0)
    opt = cs.SGD(model, 0.1)
    red = dist.GradReducer(model, dist.Local(), opt)
    assert red.count == sum(p.size for p in model.params.values())
    for (_, _, g), (_, _, g_opt) in zip(model.parameters(), opt.params):
        assert g is g_opt and np.shares_memory(g, red.buffer)
    model.zero_grad()
    loss = cs.CrossEntropyLoss()
    loss.forward(model.forward(np.ones((2, 1, 8, 8))), np.array([0, 1]))
    model.backward(loss.backward())
    assert np.abs(red.grads).sum() > 0  # backward wrote into the buffer
    model.layers[0].reset_parameters(np.random.default_rng(0))  # replaces the grads
    with pytest.raises(RuntimeError, match="'weight' was replaced after the GradReducer"):
        red.reduce(2)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_weighted_sum_with_an_empty_shard_and_the_slots(k: int) -> None:
    """Rank r holds r images (rank 0 none) with 'mean gradient' g_r = r + 1: the result is
    Σ r·(r+1) / Σ r; the slots add up; one rank's stop flag stops all; a NaN loss reaches all."""
    def body(c: dist.ThreadComm) -> tuple:
        model = make_model(0)
        red = dist.GradReducer(model, c)
        red.grads[...] = np.nan if c.rank == 0 else c.rank + 1.0  # rank 0's leftovers ignored
        t = red.reduce(c.rank, loss_sum=2.0 * c.rank, correct=c.rank, stop=c.rank == k - 1)
        t2 = red.reduce(c.rank, loss_sum=float("nan") if c.rank == 1 else 0.0)
        return red.grads[:3].copy(), t, t2

    n = sum(range(k))
    want = sum(r * (r + 1) for r in range(k)) / n
    for g, t, t2 in dist.ThreadComm.run(k, body):
        assert np.allclose(g, want * 1.0) or np.allclose(g, g[0])  # second reduce: same again
        assert (t.n, t.loss_sum, t.correct, t.stop) == (n, 2.0 * n, n, True)
        assert t.loss == 2.0 and t2.stop is False and np.isnan(t2.loss)


def test_signature_check_names_the_difference() -> None:
    def body(c: dist.ThreadComm) -> None:
        model = make_model(0, np.float32 if c.rank == 1 else np.float64)
        dist.broadcast_state(model, c)

    with pytest.raises(dist.ReplicaMismatch, match=r"rank 1's model differs from rank 0's: "
                       r"'model.0.weight' is float32 \(4, 1, 3, 3\) there, float64"):
        dist.ThreadComm.run(2, body)


def test_replica_check_sees_one_changed_bit() -> None:
    def body(c: dist.ThreadComm) -> None:
        model = make_model(0)
        dist.check_replicas(model, c)  # the same seed: the same bits
        if c.rank == 2:
            w = model.params["0.weight"]
            w.view(np.int64).flat[0] ^= 1
        dist.check_replicas(model, c)

    with pytest.raises(dist.ReplicaMismatch, match="drifted apart"):
        dist.ThreadComm.run(3, body)


def test_broadcast_makes_different_seeds_one_model() -> None:
    def body(c: dist.ThreadComm) -> dict:
        model = make_model(c.rank, bn=True)
        model.buffers["1.running_mean"][...] = c.rank
        dist.broadcast_state(model, c)
        return model.state_dict()

    states = dist.ThreadComm.run(3, body)
    ref = make_model(0, bn=True).state_dict()
    ref["1.running_mean"] = np.zeros(4)
    assert max_diff(states[1], ref) == 0 and max_diff(states[2], ref) == 0


def test_running_statistics_are_averaged() -> None:
    def body(c: dist.ThreadComm) -> np.ndarray:
        model = make_model(0, bn=True)
        model.buffers["1.running_var"][...] = c.rank + 1.0
        assert dist.average_buffers(model, c) == 2 * (4 + 3)
        assert model.buffers["1.num_batches_tracked"] == 0  # integer buffers left alone
        return model.buffers["1.running_var"].copy()

    for v in dist.ThreadComm.run(3, body):
        assert np.array_equal(v, np.full(4, 2.0))


# -- K workers equal one process -------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [61, 49])  # last batch 13 (uneven), 1 (< K: empty shards)
def test_k_workers_equal_one_process_float64(k: int, n: int) -> None:
    x, y = make_data(n)
    steps = 10 if n == 61 else 8  # both end on a short batch, then go on into the next epoch
    ref = single_process(x, y, batch_size=16, steps=steps, augment=AUG)
    out = dist.ThreadComm.run(k, lambda c: data_parallel(c, x, y, batch_size=16, steps=steps,
                                                         augment=AUG))
    for o in out:
        assert max_diff(o["state"], ref) <= 1e-12
        assert max_diff(o["state"], out[0]["state"]) == 0  # ranks bit for bit equal
    if n == 49 and k > 1:
        assert 0 in out[-1]["counts"]  # a step with an empty shard was taken


def test_float32_workers_equal_one_process() -> None:
    x, y = make_data(61)
    ref = single_process(x, y, batch_size=16, steps=8, dtype=np.float32)
    for k in (2, 3):
        out = dist.ThreadComm.run(k, lambda c: data_parallel(c, x, y, batch_size=16, steps=8,
                                                             dtype=np.float32))
        for key, v in out[0]["state"].items():
            np.testing.assert_allclose(v, ref[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [2, 3])
def test_negative_controls_are_detected(k: int) -> None:
    """A DDP-style mean of the K means (wrong on uneven slices) and a run without the initial
    broadcast are both far outside the tolerance."""
    x, y = make_data(61)
    ref = single_process(x, y, batch_size=16, steps=4)
    ddp = dist.ThreadComm.run(k, lambda c: data_parallel(c, x, y, batch_size=16, steps=4,
                                                         mode="ddp_mean"))
    assert max_diff(ddp[0]["state"], ref) > 1e-4
    nob = dist.ThreadComm.run(k, lambda c: data_parallel(c, x, y, batch_size=16, steps=4,
                                                         broadcast=False))
    assert max_diff(nob[0]["state"], ref) > 1e-2
    assert max_diff(nob[0]["state"], nob[1]["state"]) > 1e-2  # and the ranks disagree


@pytest.mark.parametrize("k", [2, 3])
def test_sync_bn_equals_batch_norm_on_the_global_batch(k: int) -> None:
    x, y = make_data(50)  # last batch 2: slices 1, 1 (, 0)
    ref = single_process(x, y, batch_size=16, steps=5, bn=True)
    sync = dist.ThreadComm.run(k, lambda c: data_parallel(c, x, y, batch_size=16, steps=5,
                                                          bn=True, sync_bn=True))
    for o in sync:  # weights and running statistics
        assert max_diff(o["state"], ref) <= 1e-12
    local = dist.ThreadComm.run(k, lambda c: data_parallel(c, x, y, batch_size=16, steps=3,
                                                           bn=True))
    assert max_diff(local[0]["state"], single_process(x, y, batch_size=16, steps=3, bn=True)) > 1e-3


def test_sync_bn_needs_two_values_per_channel_over_all_workers() -> None:
    x, y = make_data(17)  # last batch 1: BatchNorm1D sees one value per channel in all
    with pytest.raises(cs.ShapeError, match="more than one value per channel"):
        dist.ThreadComm.run(2, lambda c: data_parallel(c, x, y, batch_size=16, steps=2,
                                                       bn=True, sync_bn=True))


# -- evaluation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("k,n", [(2, 37), (3, 37), (4, 3)])  # (4, 3): one rank evaluates nothing
def test_sharded_evaluation_is_exact(k: int, n: int) -> None:
    x, y = make_data(n, seed=1)
    model = make_model(0)
    whole = evaluate(model, x, y, num_classes=3, batch_size=7)
    parts = dist.ThreadComm.run(k, lambda c: dist.evaluate_sharded(
        evaluate, c, make_model(0), x, y, num_classes=3, batch_size=7))
    for ev in parts:
        assert np.array_equal(ev.confusion, whole.confusion) and ev.total == n
        assert ev.correct == whole.correct and abs(ev.loss - whole.loss) < 1e-12
