"""AdamW parameter groups and the warm-up + cosine schedule against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from nafrestore.engine.optim import WarmupCosineSchedule, build_optimizer, lr_factor, param_groups
from nafrestore.models import create_model


def _named_groups(model: torch.nn.Module, wd: float = 0.05) -> dict[str, set[str]]:
    by_id = {id(p): n for n, p in model.named_parameters()}
    return {g["group"]: {by_id[id(p)] for p in g["params"]} for g in param_groups(model, wd)}


@pytest.mark.parametrize("name", ["lka_nafnet", "nafnet"])
def test_param_groups_decay_only_conv_weights(name: str) -> None:
    model = create_model(name, width=8, enc_blocks=[1, 1], dec_blocks=[1, 1], middle_blocks=1)
    groups = _named_groups(model)
    decay, no_decay = groups["decay"], groups["no_decay"]
    params = dict(model.named_parameters())
    assert decay | no_decay == set(params) and not decay & no_decay
    for n in decay:
        assert params[n].ndim == 4 and n.endswith(".weight") and ".norm" not in n, n
    for n, p in params.items():
        leaf = n.rsplit(".", 1)[-1]
        if p.ndim < 2 or leaf in ("beta", "gamma", "scale") or ".norm" in n:
            assert n in no_decay, n
    # The specific kinds the spec names, all present in these models:
    assert any(n.endswith(".bias") for n in no_decay)
    assert any(".norm1.weight" in n for n in no_decay)
    assert any(n.endswith(".beta") for n in no_decay) and any(n.endswith(".gamma") for n in no_decay)
    if name == "lka_nafnet":
        assert any(n.endswith("layer_scale_1.scale") for n in no_decay)


def test_optimizer_weight_decay_per_group() -> None:
    model = create_model("lka_nafnet", width=8, enc_blocks=[1, 1], dec_blocks=[1, 1])
    opt = build_optimizer(model, lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    assert isinstance(opt, torch.optim.AdamW)
    wd = {g["group"]: g["weight_decay"] for g in opt.param_groups}
    assert wd == {"decay": 0.1, "no_decay": 0.0}
    assert all(g["betas"] == (0.9, 0.95) and g["lr"] == 2e-3 for g in opt.param_groups)


def _schedule(**kw: float) -> tuple[torch.optim.Optimizer, WarmupCosineSchedule]:
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    args = {"total_iters": 110, "warmup_iters": 10, "min_lr": 1e-5, **kw}
    return opt, WarmupCosineSchedule(opt, **args)  # type: ignore[arg-type]


def test_schedule_values_iteration_mode() -> None:
    opt, sched = _schedule()
    lr, lo = 1e-3, 1e-5
    expected = {
        0: lr * 1 / 10,  # warm-up: (s + 1) / warmup_iters
        4: lr * 5 / 10,
        9: lr,  # warm-up ends at the peak
        10: lr,  # cosine starts at the peak
        35: lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * 25 / 100)),
        60: lo + (lr - lo) * 0.5,  # half-way through the cosine
        109: lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * 99 / 100)),
        110: lo,  # the floor at the end
        500: lo,  # and beyond
    }
    for step, value in expected.items():
        assert sched.set_step(step) == pytest.approx(value, rel=1e-12), step
        assert opt.param_groups[0]["lr"] == pytest.approx(value, rel=1e-12)
    assert sched.progress(55) == pytest.approx(0.5)


def test_schedule_without_warmup_and_group_scaling() -> None:
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p1], "lr": 1e-3}, {"params": [p2], "lr": 5e-4}])
    sched = WarmupCosineSchedule(opt, total_iters=100, warmup_iters=0, min_lr=1e-4)
    assert sched.set_step(0) == pytest.approx(1e-3)
    sched.set_step(100)
    # Every group gets the same factor: the second one ends at half the floor.
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 5e-5])


def test_schedule_time_budget_mode() -> None:
    _, sched = _schedule(time_budget_s=100.0, warmup_iters=0)  # no warm-up steps given: the first 2 % of the run
    lr, lo = 1e-3, 1e-5
    # Progress is max(step / iters, elapsed / budget): here time dominates.
    assert sched.progress(11, elapsed_s=50.0) == pytest.approx(0.5)
    assert sched.progress(99, elapsed_s=1.0) == pytest.approx(0.9)
    assert sched.lr_at(1, elapsed_s=1.0) == pytest.approx(lr * 0.01 / 0.02)  # warm-up: the first 2 %
    t = (0.5 - 0.02) / 0.98
    assert sched.lr_at(1, elapsed_s=50.0) == pytest.approx(lo + (lr - lo) * 0.5 * (1 + math.cos(math.pi * t)))
    assert sched.lr_at(1, elapsed_s=100.0) == pytest.approx(lo)
    assert sched.progress(1, elapsed_s=250.0) == 1.0


def test_lr_factor_and_state_dict() -> None:
    assert lr_factor(0.0, warmup=0.1, floor=0.0) == 0.0
    assert lr_factor(0.05, warmup=0.1, floor=0.0) == pytest.approx(0.5)
    assert lr_factor(1.0, warmup=0.1, floor=0.25) == pytest.approx(0.25)
    assert lr_factor(2.0, warmup=0.0, floor=0.25) == pytest.approx(0.25)
    _, sched = _schedule()
    sched.set_step(37)
    state = sched.state_dict()
    _, other = _schedule()
    other.load_state_dict(state)
    assert other.get_last_lr() == pytest.approx(sched.get_last_lr())


def test_schedule_rejects_bad_lengths() -> None:
    with pytest.raises(ValueError):
        _schedule(warmup_iters=110)


def test_warmup_iters_is_honoured_with_a_time_budget() -> None:
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, lr=1e-3, betas=(0.9, 0.9), weight_decay=0.0)
    sched = WarmupCosineSchedule(opt, total_iters=1000, warmup_iters=10, min_lr=0.0, time_budget_s=100.0)
    # The first 10 steps ramp up linearly whatever the clock says, then the cosine follows the time.
    # (The cosine has barely moved by step 9 of 1000: relative 1e-3.)
    assert sched.lr_at(0, elapsed_s=0.0) == pytest.approx(1e-4, rel=1e-3)
    assert sched.lr_at(4, elapsed_s=0.0) == pytest.approx(5e-4, rel=1e-3)
    assert sched.lr_at(9, elapsed_s=0.0) == pytest.approx(1e-3, rel=1e-3)
    assert sched.lr_at(20, elapsed_s=50.0) == pytest.approx(0.5e-3)
    no_warmup = WarmupCosineSchedule(opt, total_iters=1000, warmup_iters=0, min_lr=0.0, time_budget_s=100.0)
    assert no_warmup.lr_at(0, elapsed_s=1.0) == pytest.approx(0.5e-3)  # the default: the first 2 % of the run
