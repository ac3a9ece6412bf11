"""Settings: precedence through autofit's real ``conf.instance``, validation, defaults."""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

import autofit_jaxviz.config as config
from autofit_jaxviz.config import (
    ConfigError,
    Settings,
    env_var,
    load_settings,
)

af = pytest.importorskip("autofit")
from autonerves import conf  # noqa: E402  (imported after autofit registered its defaults)

AUTOFIT_CONFIG = Path(af.__file__).parent / "config"
PACKAGED = f"{config.PACKAGED_CONFIG} (packaged default)"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No AUTOFIT_JAXVIZ_* from the caller's shell, and only autofit's own config dir.

    ``monkeypatch`` puts ``conf.instance.configs`` back afterwards (the setter also
    drops autonerves' merged cache), so nothing leaks into other tests.
    """
    for name in list(os.environ):
        if name.startswith(config.ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setattr(
        conf.instance,
        "configs",
        [c for c in conf.instance.configs if Path(c.path) == AUTOFIT_CONFIG],
    )
    # ``push`` re-applies logging.yaml; keep the test's logging (caplog) untouched.
    monkeypatch.setattr(type(conf.instance), "configure_logging", lambda self: None)


@pytest.fixture
def workspace(tmp_path: Path):
    """Write ``<tmp>/config/general.yaml`` and push it, as a user's workspace would be."""

    def write(text: str, name: str = "general.yaml") -> Path:
        directory = tmp_path / "config"
        directory.mkdir(exist_ok=True)
        path = directory / name
        path.write_text(text)
        conf.instance.push(directory)
        return path

    return write


# --- defaults ----------------------------------------------------------------------------


def test_default_is_off_and_comes_from_the_packaged_file() -> None:
    settings = load_settings()
    assert settings.background is False
    assert settings == Settings()  # the packaged YAML and the dataclass agree
    assert settings.backend == "process"
    assert settings.min_render_interval == 0.0
    assert settings.notebook_display is True
    assert settings.shutdown_timeout == 30.0
    assert dict(settings.sources) == dict.fromkeys(config.SETTING_KEYS, PACKAGED)
    assert not any(settings.user_set(key) for key in config.SETTING_KEYS)


def test_packaged_file_has_autofit_layout_and_a_comment_per_key() -> None:
    text = config.PACKAGED_CONFIG.read_text()
    data = yaml.safe_load(text)
    assert list(data) == [config.SECTION]
    assert set(data[config.SECTION]) == set(config.SETTING_KEYS)
    for key in config.SETTING_KEYS:
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{key}:"))
        assert re.search(r"\S\s+# \S", line), f"no comment on {key!r}: {line!r}"


def test_packaged_file_is_not_registered_with_autofit_and_autofit_lookups_still_work(
    workspace,
) -> None:
    workspace("jaxviz:\n  background: true\n")
    paths = list(conf.instance.paths)
    assert load_settings().background is True
    assert list(conf.instance.paths) == paths
    assert config.PACKAGED_CONFIG.parent not in paths
    updates = conf.instance["general"]["updates"]
    assert updates["quick_update_background"] is False  # autofit's own default, unchanged
    assert float(updates["iterations_per_quick_update"]) == 1e99


# --- precedence --------------------------------------------------------------------------


def test_each_level_overrides_the_next(workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().sources["min_render_interval"] == PACKAGED

    path = workspace("jaxviz:\n  min_render_interval: 0.5\n  background: true\n")
    settings = load_settings()
    assert settings.min_render_interval == 0.5
    assert settings.sources["min_render_interval"] == str(path)
    assert settings.background is True
    assert settings.backend == "process"  # not in the workspace: packaged default
    assert settings.sources["backend"] == PACKAGED
    assert settings.user_set("background") and not settings.user_set("backend")

    monkeypatch.setenv("AUTOFIT_JAXVIZ_MIN_RENDER_INTERVAL", "1.5")
    monkeypatch.setenv("AUTOFIT_JAXVIZ_BACKGROUND", "off")
    settings = load_settings()
    assert settings.min_render_interval == 1.5
    assert settings.sources["min_render_interval"] == "environment variable " + env_var(
        "min_render_interval"
    )
    assert settings.background is False

    settings = load_settings(min_render_interval=2.5, background=None)
    assert settings.min_render_interval == 2.5
    assert settings.sources["min_render_interval"] == "keyword argument"
    assert settings.background is False  # None means "not given": env still applies
    assert settings.sources["background"] == "environment variable AUTOFIT_JAXVIZ_BACKGROUND"


def test_workspace_read_through_conf_instance_keeps_autonerves_priority(
    tmp_path: Path, workspace
) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    (lower / "general.yaml").write_text("jaxviz:\n  backend: process\n  shutdown_timeout: 5\n")
    conf.instance.push(lower)
    higher = workspace("jaxviz:\n  shutdown_timeout: 7\n")  # pushed last: highest priority
    settings = load_settings()
    assert settings.shutdown_timeout == 7.0
    assert settings.sources["shutdown_timeout"] == str(higher)
    assert settings.backend == "process"  # merged key by key, as autonerves does
    assert settings.sources["backend"] == str(lower / "general.yaml")


def test_value_set_in_memory_on_conf_instance_is_used_and_attributed(workspace) -> None:
    workspace("jaxviz:\n  background: false\n")

    @conf.with_config("general", "jaxviz", "background", value=True)
    def load() -> Settings:
        return load_settings()

    settings = load()
    assert settings.background is True
    assert settings.sources["background"] == config.IN_MEMORY_SOURCE
    assert load_settings().background is False  # with_config restored it


def test_empty_workspace_section_is_fine(workspace) -> None:
    workspace("jaxviz:\n  # background: true\n")
    assert load_settings() == Settings()


def test_without_autonerves_only_the_packaged_file_applies(
    workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace("jaxviz:\n  background: true\n")
    monkeypatch.setitem(sys.modules, "autonerves.conf", None)  # import now fails
    settings = load_settings()
    assert settings.background is False
    assert settings.sources["background"] == PACKAGED


@pytest.mark.parametrize(
    ("text", "expected"),
    [(t, True) for t in ("1", "true", "TRUE", "Yes", "on", " On ")]
    + [(t, False) for t in ("0", "false", "False", "no", "NO", "off")],
)
def test_env_booleans(monkeypatch: pytest.MonkeyPatch, text: str, expected: bool) -> None:
    monkeypatch.setenv("AUTOFIT_JAXVIZ_NOTEBOOK_DISPLAY", text)
    assert load_settings().notebook_display is expected


def test_yaml_exponent_without_dot_is_a_number(workspace) -> None:
    workspace("jaxviz:\n  shutdown_timeout: 1e2\n")  # PyYAML reads this as the string '1e2'
    assert load_settings().shutdown_timeout == 100.0


# --- validation --------------------------------------------------------------------------


def assert_names(error: ConfigError, *parts: str) -> None:
    message = str(error)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_unknown_backend_in_workspace_file(workspace) -> None:
    path = workspace("jaxviz:\n  backend: gpu\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_names(info.value, "backend", str(path), "'gpu'", "'thread'", "'process'")
    assert (info.value.key, info.value.source, info.value.value) == ("backend", str(path), "gpu")


def test_negative_interval_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOFIT_JAXVIZ_MIN_RENDER_INTERVAL", "-1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_names(
        info.value, "min_render_interval", "AUTOFIT_JAXVIZ_MIN_RENDER_INTERVAL", "'-1'", ">= 0"
    )


@pytest.mark.parametrize("value", ["maybe", "", "2", "truee"])
def test_non_boolean_env_flag(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AUTOFIT_JAXVIZ_BACKGROUND", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_names(
        info.value, "background", "AUTOFIT_JAXVIZ_BACKGROUND", repr(value), "true or false"
    )


@pytest.mark.parametrize("value", ["yes", "true", 1, 0.0])
def test_non_boolean_keyword_flag(value: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(background=value)
    assert_names(info.value, "background", "keyword argument", repr(value), "true or false")


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("min_render_interval", "-0.5", ">= 0"),
        ("min_render_interval", "soon", ">= 0"),
        ("min_render_interval", ".nan", ">= 0"),
        ("min_render_interval", "true", ">= 0"),  # a bool is not a number of seconds
        ("shutdown_timeout", "0", "> 0"),
        ("shutdown_timeout", ".inf", "> 0"),
        ("notebook_display", "1", "true or false"),  # YAML int, not a bool
        ("backend", "Thread", "'thread' or 'process'"),
        ("history_keep_recent", "0", "whole number of pictures >= 1"),
        ("history_keep_recent", "2.5", "whole number of pictures >= 1"),
        ("history_keep_ratio", "1", "> 1"),
        ("viewer_port", "70000", "0-65535"),
        ("viewer_port", "http", "0-65535"),
        ("viewer", "1", "true or false"),
    ],
)
def test_invalid_values_in_workspace_file(workspace, key: str, value: str, allowed: str) -> None:
    path = workspace(f"jaxviz:\n  {key}: {value}\n")
    raw = yaml.safe_load(f"v: {value}")["v"]
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_names(info.value, key, str(path), allowed)
    got = info.value.value
    assert got == raw or (isinstance(raw, float) and math.isnan(raw) and math.isnan(got))


def test_invalid_keyword_numbers() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(shutdown_timeout=-3)
    assert_names(info.value, "shutdown_timeout", "keyword argument", "-3", "> 0")
    with pytest.raises(ConfigError, match="min_render_interval.*'0.5'"):
        load_settings(min_render_interval="0.5")  # Python callers pass numbers


def test_history_and_viewer_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOFIT_JAXVIZ_HISTORY_KEEP_RECENT", "12")
    monkeypatch.setenv("AUTOFIT_JAXVIZ_VIEWER_PORT", "0")
    monkeypatch.setenv("AUTOFIT_JAXVIZ_HISTORY", "off")
    settings = load_settings()
    assert (settings.history_keep_recent, settings.viewer_port, settings.history) == (12, 0, False)
    monkeypatch.setenv("AUTOFIT_JAXVIZ_VIEWER_PORT", "-1")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_names(info.value, "viewer_port", "AUTOFIT_JAXVIZ_VIEWER_PORT", "'-1'", "0-65535")


def test_unknown_key_in_workspace_file(workspace) -> None:
    path = workspace("jaxviz:\n  backgroud: true\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_names(info.value, "backgroud", str(path), "True", "background", "shutdown_timeout")
    assert "did you mean 'background'" in str(info.value)


def test_unknown_keyword_argument() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(backnd="thread")
    assert_names(info.value, "backnd", "keyword argument", "'thread'", "backend")


def test_broken_workspace_yaml_is_a_config_error(workspace) -> None:
    path = workspace("jaxviz:\n  background: [true\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_names(info.value, str(path))


def test_section_that_is_not_a_mapping(workspace) -> None:
    path = workspace("jaxviz: true\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_names(info.value, "jaxviz", str(path), "True", "mapping", "background")


def test_bad_value_is_an_error_even_when_overridden(workspace) -> None:
    workspace("jaxviz:\n  backend: gpu\n")
    with pytest.raises(ConfigError, match="gpu"):
        load_settings(backend="thread")


def test_broken_packaged_default_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "general.yaml"
    broken.write_text("jaxviz:\n  min_render_interval: -1\n")
    monkeypatch.setattr(config, "PACKAGED_CONFIG", broken)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert_names(info.value, "min_render_interval", str(broken), "packaged default", "-1")


def test_unknown_env_var_is_reported_not_silently_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AUTOFIT_JAXVIZ_BAKCEND", "thread")
    with caplog.at_level(logging.WARNING, logger="autofit_jaxviz.config"):
        settings = load_settings()
    assert settings.backend == "process"
    assert "AUTOFIT_JAXVIZ_BAKCEND" in caplog.text
    assert "AUTOFIT_JAXVIZ_BACKEND" in caplog.text


def test_settings_are_frozen_and_validated_when_built_directly() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.background = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.sources["background"] = "x"  # type: ignore[index]
    with pytest.raises(ConfigError, match="backend.*'gpu'"):
        Settings(backend="gpu")  # type: ignore[arg-type]


def test_describe_lists_every_key_with_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOFIT_JAXVIZ_BACKGROUND", "1")
    lines = load_settings().describe().splitlines()
    assert len(lines) == len(config.SETTING_KEYS)
    assert lines[0] == "jaxviz.background = True  (environment variable AUTOFIT_JAXVIZ_BACKGROUND)"
