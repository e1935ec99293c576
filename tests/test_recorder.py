"""The one call recorder (src/convlens/_recorder.py): count, keep, stop, trace, and leave no hook behind."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from convlens.core.recorder import (
    PROBING,
    Recorder,
    StopForward,
    grad_mode_restored,
    hooks,
    is_recorder_hook,
    preserved_modes,
)
from invariants import assert_unchanged, global_hook_counts, snapshot
from models import ReusedNet


class Boom(nn.Module):
    """Raises when called: proves that nothing after the stop runs."""

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("boom: this layer must not run")


class Branch(nn.Module):
    """``a`` feeds both ``b`` and ``c``: ``c``'s input comes from call 0, not from the last call (``b``)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3)
        self.b = nn.Conv2d(2, 2, 3)
        self.c = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.a(x)
        u = self.b(h)
        v = self.c(h)
        out: Tensor = u.sum() + v.sum()
        return out


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x: Tensor, scale: float = 1.0) -> Tensor:
        out: Tensor = self.conv(x) * scale
        return out


def _x(*shape: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# -- counting and keeping --------------------------------------------------------------------------


def test_counts_are_per_forward(reused_net: ReusedNet) -> None:
    rec = Recorder(reused_net, {"relu": reused_net.relu, "fc": reused_net.fc})
    with rec.attached():
        rec.start()
        reused_net(_x(1, 3, 8, 8))
        assert rec.counts == {"relu": 3, "fc": 1}
        rec.start()
        assert rec.counts == {"relu": 0, "fc": 0}
        reused_net(_x(1, 3, 8, 8))
        assert rec.counts == {"relu": 3, "fc": 1}


def test_keep_gets_the_wanted_calls_only(reused_net: ReusedNet) -> None:
    kept: list[tuple[str, int, tuple[int, ...]]] = []

    def keep(name: str, call: int, output: Tensor) -> None:
        kept.append((name, call, tuple(output.shape)))

    rec = Recorder(
        reused_net,
        {"relu": reused_net.relu, "conv1": reused_net.conv1},
        wanted={"relu": {0, 2}},  # conv1: missing, so every call
        keep=keep,
    )
    assert rec.events is None  # conv1's wanted set is not explicit
    with rec.attached():
        rec.start()
        reused_net(_x(2, 3, 8, 8))
    assert kept == [("conv1", 0, (2, 4, 8, 8)), ("relu", 0, (2, 4, 8, 8)), ("relu", 2, (2, 5))]
    assert rec.counts == {"relu": 3, "conv1": 1}  # every call is counted, wanted or not


def test_events_is_the_number_of_wanted_calls_when_every_set_is_explicit(reused_net: ReusedNet) -> None:
    watched = {"relu": reused_net.relu, "fc": reused_net.fc}
    assert Recorder(reused_net, watched, wanted={"relu": {0, 2}, "fc": {0}}).events == 3
    assert Recorder(reused_net, watched, wanted={"relu": {1}, "fc": None}).events is None


def test_a_replacement_from_keep_flows_downstream() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten())
    replacement = torch.full((1, 2, 3, 3), -2.0)
    seen_by_relu: list[Tensor] = []
    handle = net[1].register_forward_pre_hook(lambda _m, args: seen_by_relu.append(args[0].clone()))
    rec = Recorder(net, {"0": net[0]}, keep=lambda _n, _c, _o: replacement)
    try:
        with rec.attached():
            rec.start()
            out = net(_x(1, 1, 5, 5))
    finally:
        handle.remove()
    assert torch.equal(seen_by_relu[0], replacement)  # the next layer saw the replacement
    assert torch.equal(out, torch.zeros(1, 18))  # relu(-2) = 0 everywhere
    plain = net(_x(1, 1, 5, 5))
    assert not torch.equal(plain, out)  # without the recorder the conv's own output flows


def test_keep_returning_none_leaves_the_output() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    rec = Recorder(net, {"0": net[0]}, keep=lambda _n, _c, _o: None)
    x = _x(1, 1, 5, 5)
    expected = net(x)
    with rec.attached():
        rec.start()
        torch.testing.assert_close(net(x), expected, rtol=0, atol=0)


def test_stop_forward_after_the_remaining_wanted_calls(reused_net: ReusedNet) -> None:
    reused_net.add_module("fc", Boom())  # would raise if the forward went on
    kept: list[int] = []
    rec = Recorder(
        reused_net, {"relu": reused_net.relu}, wanted={"relu": {0, 1}}, keep=lambda _n, c, _o: kept.append(c)
    )
    with rec.attached():
        rec.start(remaining=2)
        with pytest.raises(StopForward):
            reused_net(_x(1, 3, 8, 8))
        assert kept == [0, 1]
        assert rec.counts == {"relu": 2}
        assert rec.remaining == 0
        rec.start(remaining=1)
        with pytest.raises(StopForward):
            reused_net(_x(1, 3, 8, 8))
        assert kept == [0, 1, 0]
        assert rec.counts == {"relu": 1}
        rec.start()  # None: never stops, so Boom runs
        with pytest.raises(RuntimeError, match=r"^boom"):
            reused_net(_x(1, 3, 8, 8))
    assert no_hooks(reused_net)


def test_an_unwanted_call_does_not_count_towards_the_stop() -> None:
    relu = nn.ReLU()
    model = nn.Sequential(relu, relu, relu, Boom())  # relu called three times, then Boom
    rec = Recorder(model, {"relu": relu}, wanted={"relu": {2}})
    with rec.attached():
        rec.start(remaining=1)
        with pytest.raises(StopForward):
            model(_x(1, 2))
    assert rec.counts == {"relu": 3}


# -- forwards_only and on_forward -------------------------------------------------------------------


def test_forwards_only_ignores_direct_submodule_calls_and_restarts_per_forward(reused_net: ReusedNet) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    rec = Recorder(
        reused_net,
        {"relu": reused_net.relu},
        forwards_only=True,
        on_forward=lambda args, kwargs: calls.append((args, kwargs)),
    )
    with rec.attached():
        reused_net.relu(_x(1, 4))  # a direct call, outside a forward of the model
        assert rec.counts == {"relu": 0}
        assert calls == []
        x = _x(1, 3, 8, 8)
        reused_net(x)
        assert rec.counts == {"relu": 3}
        reused_net(x)
        assert rec.counts == {"relu": 3}  # a fresh record, not 6
        reused_net.relu(_x(1, 4))
        assert rec.counts == {"relu": 3}
        assert rec.depth == 0
    assert len(calls) == 2
    assert calls[0][0][0] is x
    assert no_hooks(reused_net)


def test_on_forward_receives_args_and_kwargs() -> None:
    model = Scaled()
    got: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    rec = Recorder(model, {"conv": model.conv}, on_forward=lambda a, k: got.append((a, k)))
    x = _x(1, 1, 2, 2)
    with rec.attached():
        model(x, scale=2.0)
        model(x, 3.0)
    assert len(got) == 2
    assert got[0][0] == (x,)
    assert got[0][1] == {"scale": 2.0}
    assert got[1][0][1] == 3.0
    assert got[1][1] == {}
    assert rec.counts == {"conv": 2}  # not forwards_only: counts accumulate until start()


def test_without_forwards_only_a_direct_call_is_counted(reused_net: ReusedNet) -> None:
    rec = Recorder(reused_net, {"relu": reused_net.relu})
    with rec.attached():
        reused_net.relu(_x(1, 4))
    assert rec.counts == {"relu": 1}


# -- probe tokens -----------------------------------------------------------------------------------


def test_a_recorder_ignores_a_pass_marked_by_a_probe_token(reused_net: ReusedNet) -> None:
    plain = Recorder(reused_net, {"relu": reused_net.relu})
    prober = Recorder(reused_net, {"relu": reused_net.relu}, probe=True)
    other = Recorder(reused_net, {"relu": reused_net.relu}, probe=True)
    assert len({id(plain.token), id(prober.token), id(other.token)}) == 3
    with plain.attached(), prober.attached(), other.attached():
        token = PROBING.set(prober.token)
        try:
            reused_net(_x(1, 3, 8, 8))
        finally:
            PROBING.reset(token)
        assert (plain.counts, prober.counts, other.counts) == ({"relu": 0}, {"relu": 3}, {"relu": 0})
        reused_net(_x(1, 3, 8, 8))  # a normal forward: only the plain recorder sees it
        assert (plain.counts, prober.counts, other.counts) == ({"relu": 3}, {"relu": 3}, {"relu": 0})
        mine = Recorder(reused_net, {"relu": reused_net.relu})
        with mine.attached(), mine.owned():  # a recorder's own pass: a plain (user's) one ignores it
            reused_net(_x(1, 3, 8, 8))
        assert (plain.counts, mine.counts) == ({"relu": 3}, {"relu": 3})


# -- trace ------------------------------------------------------------------------------------------


def test_trace_records_shapes_and_the_source_of_a_branch() -> None:
    model = Branch()
    rec = Recorder(model, {}, trace=[model.a, model.b, model.c])
    with rec.attached():
        rec.start()
        model(_x(1, 1, 7, 7))
    assert [(c.module, c.input_shape, c.source, c.output_shape) for c in rec.calls] == [
        (model.a, (1, 1, 7, 7), -1, (1, 2, 5, 5)),
        (model.b, (1, 2, 5, 5), 0, (1, 2, 3, 3)),
        (model.c, (1, 2, 5, 5), 0, (1, 2, 5, 5)),  # a's output, though b ran last
    ]
    assert rec.open == []
    assert rec.last == 2


def test_trace_names_the_failing_call_as_the_culprit() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(3, 2, 3))
    rec = Recorder(net, {}, trace=list(net))
    with rec.attached():
        rec.start()
        with pytest.raises(RuntimeError) as info:
            net(_x(1, 1, 7, 7))
    assert [c.output_shape for c in rec.calls] == [(1, 2, 5, 5), None]
    culprit = rec.culprit(info.value)
    assert culprit is not None
    assert culprit.module is net[1]
    assert rec.culprit(RuntimeError("raised elsewhere")) is None


def test_trace_closes_a_call_whose_error_the_model_caught_when_the_next_starts() -> None:
    class Fallback(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fast = nn.Conv2d(4, 2, 1)
            self.slow = nn.Conv2d(3, 2, 1)

        def forward(self, x: Tensor) -> Tensor:
            try:
                out: Tensor = self.fast(x)
            except RuntimeError:
                out = self.slow(x)
            return out

    model = Fallback()
    rec = Recorder(model, {}, trace=[model.fast, model.slow])
    with rec.attached():
        rec.start()
        model(_x(1, 3, 2, 2))
    assert [(c.module, c.output_shape) for c in rec.calls] == [(model.fast, None), (model.slow, (1, 2, 2, 2))]
    assert rec.open == []


def test_trace_source_follows_a_functional_op_to_the_last_call() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(50, 3))
    rec = Recorder(net, {}, trace=[net[0], net[2]])  # Flatten is not traced
    with rec.attached():
        rec.start()
        net(_x(1, 1, 7, 7))
    assert [(c.input_shape, c.source, c.output_shape) for c in rec.calls] == [
        ((1, 1, 7, 7), -1, (1, 2, 5, 5)),
        ((1, 50), 0, (1, 3)),
    ]


# -- hooks are removed ------------------------------------------------------------------------------


def test_every_hook_is_removed_after_the_block_even_when_the_body_raises(reused_net: ReusedNet) -> None:
    before = snapshot(reused_net)
    global_before = global_hook_counts()
    rec = Recorder(
        reused_net,
        {"relu": reused_net.relu, "fc": reused_net.fc},
        trace=[reused_net.conv1, reused_net.relu],
        forwards_only=True,
        on_forward=lambda _a, _k: None,
    )
    with rec.attached():
        assert not no_hooks(reused_net)
        reused_net(_x(1, 3, 8, 8))
    assert_unchanged(reused_net, before)

    def forward_then_raise() -> None:
        with rec.attached():
            reused_net(_x(1, 3, 8, 8))
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match=r"^inside$"):
        forward_then_raise()
    assert_unchanged(reused_net, before)
    with pytest.raises(RuntimeError), rec.attached():
        reused_net(_x(1, 1, 8, 8))  # the forward itself raises
    assert_unchanged(reused_net, before)
    assert global_hook_counts() == global_before


def test_hooks_removes_those_registered_when_a_later_registration_raises() -> None:
    plain = nn.Conv2d(1, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, and still in use
        script = torch.jit.script(nn.Conv2d(1, 1, 1))
    with (
        pytest.raises(RuntimeError, match=r"not supported on ScriptModules"),
        hooks(
            pre_kwargs=[(plain, lambda _m, _a, _k: None)],
            pre=[(plain, lambda _m, _a: None)],
            forward=[(plain, lambda _m, _a, _o: None)],
            always=[(plain, lambda _m, _a, _o: None), (script, lambda _m, _a, _o: None)],
        ),
    ):
        pytest.fail("the body must not run")
    assert not plain._forward_hooks
    assert not plain._forward_pre_hooks
    assert not plain._forward_hooks_always_called
    assert not plain._forward_pre_hooks_with_kwargs


def test_hooks_registers_every_kind_and_always_hooks_run_when_the_forward_raises() -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 1), Boom())
    boom = net[1]
    ran: list[str] = []
    with (
        hooks(
            pre_kwargs=[(net, lambda _m, _a, _k: ran.append("pre_kwargs"))],
            pre=[(boom, lambda _m, _a: ran.append("pre"))],
            forward=[(boom, lambda _m, _a, _o: ran.append("forward"))],
            always=[(boom, lambda _m, _a, _o: ran.append("always"))],
        ),
        pytest.raises(RuntimeError, match=r"^boom"),
    ):
        net(_x(1, 1, 2, 2))
    assert ran == ["pre_kwargs", "pre", "always"]
    assert no_hooks(net)


# -- modes --------------------------------------------------------------------------------------------


def _mixed() -> nn.Sequential:
    inner = nn.Sequential(nn.BatchNorm1d(2), nn.Dropout())
    model = nn.Sequential(nn.Linear(2, 2), inner)
    model.train()
    inner.eval()
    inner[1].train()
    return model


def _flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


@pytest.mark.parametrize("training", [True, False, None])
def test_preserved_modes_restores_mixed_flags_even_on_exception(training: bool | None) -> None:
    model = _mixed()
    flags = _flags(model)
    assert flags == [True, True, False, False, True]
    with preserved_modes(model, training=training):
        if training is None:
            assert _flags(model) == flags
        else:
            assert _flags(model) == [training] * 5
        model.eval()  # the body changes them further
    assert _flags(model) == flags

    def change_then_raise() -> None:
        with preserved_modes(model, training=training):
            model.train()
            raise KeyError("inside")

    with pytest.raises(KeyError):
        change_then_raise()
    assert _flags(model) == flags


@pytest.mark.parametrize("enabled", [True, False])
def test_grad_mode_restored_even_on_exception(enabled: bool) -> None:
    with torch.set_grad_enabled(enabled):
        with grad_mode_restored():
            torch.set_grad_enabled(not enabled)
            assert torch.is_grad_enabled() is not enabled
        assert torch.is_grad_enabled() is enabled

        def flip_then_raise() -> None:
            with grad_mode_restored():
                torch.set_grad_enabled(not enabled)
                raise ValueError("inside")

        with pytest.raises(ValueError, match=r"^inside$"):
            flip_then_raise()
        assert torch.is_grad_enabled() is enabled


def test_stop_after_and_unwound_set_the_stop_and_leave_the_record() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    kept: list[str] = []
    rec = Recorder(
        net, {"0": net[0], "1": net[1]}, keep=lambda name, call, out: kept.append(name), forwards_only=True
    )
    with rec.attached():
        rec.stop_after(1)
        with pytest.raises(StopForward):
            net(torch.zeros(1, 1, 7, 7))
        assert kept == ["0"]
        assert rec.counts == {"0": 1, "1": 0}  # the record stays
        rec.unwound()
        assert (rec.remaining, rec.depth, rec.counts) == (None, 0, {"0": 1, "1": 0})
        net(torch.zeros(1, 1, 7, 7))  # a fresh forward, never stopped
        assert kept == ["0", "0", "1"]


def test_is_recorder_hook_tells_convlens_hooks_from_a_users() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    user = net[1].register_forward_hook(lambda _m, _i, _o: None)
    rec = Recorder(net, {"1": net[1]}, trace=[net[0]], forwards_only=True)
    with rec.attached():
        found = [
            is_recorder_hook(hook)
            for m in net.modules()
            for hooks in (m._forward_hooks, m._forward_pre_hooks)
            for hook in hooks.values()
        ]
    user.remove()
    assert found.count(False) == 1
    assert found.count(True) == 5  # watch, trace pre and post, the model's pre and post
