"""Analysis flags, the LiveUpdates mixin on real ``af.Analysis`` subclasses, the mode choice."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from autofit_jaxviz.config import Settings
from autofit_jaxviz.flags import (
    BackendDecision,
    LiveUpdates,
    background_update_supported,
    decide_backend,
    jax_visualization_supported,
    log_backend_decision,
    needs_host_conversion,
)

af = pytest.importorskip("autofit")

ON = Settings(background=True, sources={"background": "environment variable X"})
OFF = Settings(background=False, sources={"background": "/ws/config/general.yaml"})


class Plain:
    pass


class PlainLive(LiveUpdates):
    pass


class Analysis(af.Analysis):
    def __init__(self, data: np.ndarray, use_jax: bool = False) -> None:
        super().__init__(use_jax=use_jax)
        self.data = data

    def log_likelihood_function(self, instance: object) -> float:
        return 0.0


class LiveAnalysis(LiveUpdates, Analysis):
    pass


class LiveAnalysisDirect(LiveUpdates, af.Analysis):
    pass


def test_defaults_are_off() -> None:
    assert background_update_supported(Plain()) is False
    assert jax_visualization_supported(Plain()) is False
    assert needs_host_conversion(Plain()) is True
    assert background_update_supported(Analysis(np.zeros(3))) is False  # autofit's property


def test_mixin_opts_in_plain_and_autofit_classes() -> None:
    assert background_update_supported(PlainLive()) is True
    live = LiveAnalysis(np.arange(3.0))
    assert background_update_supported(live) is True
    assert isinstance(live, af.Analysis)
    np.testing.assert_array_equal(live.data, np.arange(3.0))  # user __init__ ran
    assert live.is_jax is False  # af.Analysis.__init__ ran through the MRO
    assert LiveAnalysis.__mro__[1:3] == (LiveUpdates, Analysis)
    direct = LiveAnalysisDirect(use_jax=False)
    assert background_update_supported(direct) is True
    assert direct.kwargs == {}


def test_mixin_leaves_autofits_jax_visualization_default_alone() -> None:
    # autofit's default is ``is_jax``; its Fitness reads the same attribute.
    assert jax_visualization_supported(LiveAnalysis(np.zeros(1), use_jax=False)) is False
    assert jax_visualization_supported(LiveAnalysis(np.zeros(1), use_jax=True)) is True
    assert needs_host_conversion(LiveAnalysis(np.zeros(1), use_jax=True)) is False


def test_explicit_jax_visualization_flag_on_an_autofit_subclass() -> None:
    class Converting(LiveUpdates, Analysis):
        supports_jax_visualization = False

    assert needs_host_conversion(Converting(np.zeros(1), use_jax=True)) is True


def test_mixin_after_analysis_is_refused_not_silently_off() -> None:
    with pytest.raises(TypeError, match=r"list LiveUpdates first.*class Wrong\(LiveUpdates, "):

        class Wrong(af.Analysis, LiveUpdates):
            pass


def test_subclass_may_opt_back_out() -> None:
    class OptOut(LiveAnalysis):
        supports_background_update = False

    assert background_update_supported(OptOut(np.zeros(1))) is False


def test_non_boolean_flag_is_an_error() -> None:
    class Sloppy:
        supports_background_update = "yes"

    with pytest.raises(TypeError, match=r"Sloppy\.supports_background_update.*'yes'"):
        background_update_supported(Sloppy())
    assert background_update_supported(type("NumpyBool", (), {
        "supports_background_update": np.bool_(True)})()) is True


@pytest.mark.parametrize(
    ("settings", "analysis", "mode"),
    [
        (OFF, Plain(), "sync"),
        (OFF, PlainLive(), "sync"),
        (ON, Plain(), "sync"),
        (ON, PlainLive(), "process"),  # the default backend
        (Settings(background=True, backend="thread"), PlainLive(), "thread"),
        (ON, LiveAnalysis(np.zeros(1)), "process"),
        (ON, Analysis(np.zeros(1)), "sync"),
    ],
)
def test_mode_needs_both_config_and_flag(settings: Settings, analysis: object, mode: str) -> None:
    decision = decide_backend(settings, analysis)
    assert isinstance(decision, BackendDecision)
    chosen, reason = decision
    assert chosen == mode
    assert decision.background is (mode != "sync")
    assert reason


def test_reasons_say_why() -> None:
    _, reason = decide_backend(OFF, PlainLive())
    assert "jaxviz.background is false" in reason and "/ws/config/general.yaml" in reason
    _, reason = decide_backend(ON, Plain())
    assert "Plain does not declare supports_background_update" in reason
    assert "environment variable X" in reason and "LiveUpdates" in reason
    _, reason = decide_backend(ON, PlainLive())
    assert "process backend" in reason and "PlainLive declares" in reason


def test_one_log_line_warning_when_the_request_is_not_granted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test_flags")
    with caplog.at_level(logging.INFO, logger="test_flags"):
        assert log_backend_decision(ON, Plain(), log).backend == "sync"
        assert log_backend_decision(OFF, Plain(), log).backend == "sync"
        assert log_backend_decision(ON, PlainLive(), log).backend == "process"
    levels = [r.levelno for r in caplog.records if r.name == "test_flags"]
    assert levels == [logging.WARNING, logging.INFO, logging.INFO]
