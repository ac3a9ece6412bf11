"""Settings for live quick updates, resolved once at the start of a fit.

Precedence, highest first:

1. a keyword argument to :func:`load_settings` (``None`` means "not given");
2. an environment variable ``AUTOFIT_JAXVIZ_<KEY>`` (e.g. ``AUTOFIT_JAXVIZ_BACKGROUND=1``);
3. the ``jaxviz:`` section of the user's workspace ``config/general.yaml``, read
   through autonerves' ``conf.instance`` (the object PyAutoFit reads its own
   config from), so it follows the same config-directory order autofit users know;
4. the packaged default, ``autofit_jaxviz/config/general.yaml``.

Why the packaged default is *not* registered with ``conf.instance``:
``Config.register``/``push`` insert a directory into the process-wide config
order (ahead of autofit's own defaults), reconfigure logging as a side effect,
and are lost whenever a user or a test replaces ``conf.instance``. autonerves
merges config directories key by key (the first directory that sets a key wins,
sections are merged recursively), so reading ``conf.instance["general"]["jaxviz"]``
and filling missing keys from our own file gives the same answer without
touching autofit's state. Without autonerves (no autofit installed) only the
packaged file, the environment and keyword arguments apply.

Every value from every level is validated, also when a higher level overrides
it: a bad value anywhere is a :class:`ConfigError` naming the key, where it
came from, the value and what is allowed, so nothing configured is silently
ignored.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypedDict, Unpack

import yaml

from autofit_jaxviz.backends import BACKGROUND_BACKENDS, Backend

logger = logging.getLogger(__name__)

#: The top-level section of ``general.yaml`` that belongs to this library.
SECTION = "jaxviz"
#: Environment variables ``AUTOFIT_JAXVIZ_<KEY>`` override the config files.
ENV_PREFIX = "AUTOFIT_JAXVIZ_"
#: The packaged defaults, in autofit's ``general.yaml`` layout.
PACKAGED_CONFIG = Path(__file__).parent / "config" / "general.yaml"
#: How a keyword argument to :func:`load_settings` is named as a source.
KEYWORD_SOURCE = "keyword argument"
#: How a value set programmatically on ``conf.instance`` (not in any file) is named.
IN_MEMORY_SOURCE = "autonerves conf.instance['general']['jaxviz'] (set in memory, not from a file)"

_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class ConfigError(ValueError):
    """A setting that is unknown or invalid; raised when settings are loaded.

    The attributes repeat what the message says, for callers that want to
    react to a particular key or source.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        source: str | None = None,
        value: Any = None,
        allowed: str | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.source = source
        self.value = value
        self.allowed = allowed


class _Rejected(Exception):
    """Internal: a parser refused a value (the caller adds key and source)."""


def _parse_bool(value: Any, text: bool) -> bool:
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise _Rejected


def _parse_backend(value: Any, text: bool) -> str:
    if isinstance(value, str):
        word = value.strip() if text else value
        if word in BACKGROUND_BACKENDS:
            return word
    raise _Rejected


def _number_parser(*, strictly_positive: bool) -> Callable[[Any, bool], float]:
    def parse(value: Any, text: bool) -> float:
        # bool is an int subclass; ``True`` seconds is a mistake, not 1.0.
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif text and isinstance(value, str):
            # YAML 1.1 reads ``1e2`` (no dot) as a string, as autofit's own
            # ``iterations_per_quick_update: 1e99`` is; accept it like autofit does.
            try:
                number = float(value.strip())
            except ValueError:
                raise _Rejected from None
        else:
            raise _Rejected
        if not math.isfinite(number) or number < 0 or (strictly_positive and number == 0):
            raise _Rejected
        return number

    return parse


def _integer_parser(low: int, high: int) -> Callable[[Any, bool], int]:
    def parse(value: Any, text: bool) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif text and isinstance(value, str) and value.strip().lstrip("+").isdigit():
            number = int(value.strip())
        else:
            raise _Rejected
        if not low <= number <= high:
            raise _Rejected
        return number

    return parse


def _parse_ratio(value: Any, text: bool) -> float:
    number = _number_parser(strictly_positive=True)(value, text)
    if not number > 1:
        raise _Rejected
    return number


def _parse_share(value: Any, text: bool) -> float:
    number = _number_parser(strictly_positive=True)(value, text)
    if number > 1:
        raise _Rejected
    return number


@dataclass(frozen=True, slots=True)
class _Spec:
    parse: Callable[[Any, bool], Any]
    allowed: str


_BOOL_ALLOWED = (
    "true or false (environment variables: 1/0, true/false, yes/no, on/off, any case)"
)
_SPECS: dict[str, _Spec] = {
    "background": _Spec(_parse_bool, _BOOL_ALLOWED),
    "backend": _Spec(_parse_backend, " or ".join(repr(b) for b in BACKGROUND_BACKENDS)),
    "history": _Spec(_parse_bool, _BOOL_ALLOWED),
    "history_keep_ratio": _Spec(
        _parse_ratio, "a finite number > 1 (older pictures kept at numbers about r times apart)"),
    "history_keep_recent": _Spec(
        _integer_parser(1, 10**9), "a whole number of pictures >= 1"),
    "min_render_interval": _Spec(
        _number_parser(strictly_positive=False), "a finite number of seconds >= 0"
    ),
    "notebook_display": _Spec(_parse_bool, _BOOL_ALLOWED),
    "preview_dpi": _Spec(
        _number_parser(strictly_positive=False),
        "a finite number of dots per inch >= 0 (0: draw at the visualizer's own dpi)",
    ),
    "quick_update_seconds": _Spec(
        _number_parser(strictly_positive=False),
        "a finite number of seconds >= 0 (0: autofit's iterations_per_quick_update decides)",
    ),
    "render_budget": _Spec(
        _parse_share, "a share of one core's time, a number > 0 and <= 1 (1: no limit)"),
    "shutdown_timeout": _Spec(
        _number_parser(strictly_positive=True), "a finite number of seconds > 0"
    ),
    "viewer": _Spec(_parse_bool, _BOOL_ALLOWED),
    "viewer_port": _Spec(
        _integer_parser(0, 65535), "a TCP port, a whole number 0-65535 (0: any free port)"),
}

#: Every setting this library reads, in the order of :class:`Settings`' fields.
SETTING_KEYS: tuple[str, ...] = tuple(_SPECS)


def env_var(key: str) -> str:
    """The environment variable that sets ``key`` (e.g. ``AUTOFIT_JAXVIZ_BACKGROUND``)."""
    return f"{ENV_PREFIX}{key.upper()}"


def environment_value(key: str, environ: Mapping[str, str] | None = None) -> Any | None:
    """The setting ``key`` from its environment variable, parsed exactly as
    :func:`load_settings` parses it; ``None`` when the variable is unset. A bad
    value raises :class:`ConfigError` naming the variable and what is allowed."""
    env = os.environ if environ is None else environ
    name = env_var(key)
    if name not in env:
        return None
    return _validate(key, env[name], f"environment variable {name}", True)


def is_true_word(text: str) -> bool:
    """``1``/``true``/``yes``/``on`` in any case: how switches given as text say yes."""
    return text.strip().lower() in _TRUE_WORDS


def _invalid(key: str, source: str, value: Any) -> ConfigError:
    allowed = _SPECS[key].allowed
    return ConfigError(
        f"autofit_jaxviz setting '{SECTION}.{key}' from {source} has invalid value "
        f"{value!r}; allowed: {allowed}",
        key=key,
        source=source,
        value=value,
        allowed=allowed,
    )


def _unknown(key: Any, source: str, value: Any) -> ConfigError:
    allowed = ", ".join(SETTING_KEYS)
    close = difflib.get_close_matches(str(key), SETTING_KEYS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(
        f"unknown autofit_jaxviz setting '{SECTION}.{key}' = {value!r} from {source}"
        f"{hint}; allowed keys: {allowed}",
        key=str(key),
        source=source,
        value=value,
        allowed=allowed,
    )


def _validate(key: str, value: Any, source: str, text: bool) -> Any:
    try:
        return _SPECS[key].parse(value, text)
    except _Rejected:
        raise _invalid(key, source, value) from None


# A layer entry: (key, raw value, source description, value may be text to parse).
_Entry = tuple[str, Any, str, bool]


def _section_entries(section: Any, source: Callable[[str], str], where: str) -> list[_Entry]:
    """Entries of a ``jaxviz:`` section; ``where`` names the section's origin in errors."""
    if section is None:  # ``jaxviz:`` with every key commented out
        return []
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"autofit_jaxviz section '{SECTION}' from {where} must be a mapping of settings, "
            f"got {section!r}; allowed keys: {', '.join(SETTING_KEYS)}",
            key=SECTION,
            source=where,
            value=section,
            allowed=", ".join(SETTING_KEYS),
        )
    entries: list[_Entry] = []
    for raw_key, value in section.items():
        key = str(raw_key).lower()
        if key not in _SPECS:
            raise _unknown(raw_key, source(key), value)
        entries.append((key, value, source(key), True))
    return entries


def _packaged_layer() -> list[_Entry]:
    path = PACKAGED_CONFIG
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(
            f"cannot read autofit_jaxviz's packaged defaults {path}: {error}; "
            "the installation is incomplete, reinstall autofit_jaxviz",
            source=str(path),
        ) from error
    label = f"{path} (packaged default)"  # PACKAGED_SOURCE
    section = data.get(SECTION) if isinstance(data, dict) else None
    return _section_entries(section, lambda key: label, label)


def _packaged_defaults() -> dict[str, Any]:
    """The packaged file's value of every setting: the one place defaults live."""
    values = {key: _validate(key, raw, source, text) for key, raw, source, text
              in _packaged_layer()}
    missing = [key for key in SETTING_KEYS if key not in values]
    if missing:
        raise ConfigError(
            f"autofit_jaxviz's packaged defaults {PACKAGED_CONFIG} lack {', '.join(missing)}; "
            "the installation is incomplete, reinstall autofit_jaxviz",
            source=str(PACKAGED_CONFIG),
        )
    return values


_DEFAULTS = _packaged_defaults()
#: How a value left at its packaged default is named as a source.
PACKAGED_SOURCE = f"{PACKAGED_CONFIG} (packaged default)"


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved settings, with where each value came from.

    Construct it with :func:`load_settings`; building one directly validates
    the values the same way.
    """

    # defaults: the packaged general.yaml (read once, at import)
    background: bool = _DEFAULTS["background"]
    backend: Backend = _DEFAULTS["backend"]
    history: bool = _DEFAULTS["history"]
    history_keep_ratio: float = _DEFAULTS["history_keep_ratio"]
    history_keep_recent: int = _DEFAULTS["history_keep_recent"]
    min_render_interval: float = _DEFAULTS["min_render_interval"]
    notebook_display: bool = _DEFAULTS["notebook_display"]
    preview_dpi: float = _DEFAULTS["preview_dpi"]
    quick_update_seconds: float = _DEFAULTS["quick_update_seconds"]
    render_budget: float = _DEFAULTS["render_budget"]
    shutdown_timeout: float = _DEFAULTS["shutdown_timeout"]
    viewer: bool = _DEFAULTS["viewer"]
    viewer_port: int = _DEFAULTS["viewer_port"]
    #: key -> where its value came from (a file path, an environment variable
    #: name, "keyword argument", ...).
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for key in SETTING_KEYS:
            source = self.sources.get(key, "Settings argument")
            object.__setattr__(self, key, _validate(key, getattr(self, key), source, False))
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))

    def user_set(self, key: str) -> bool:
        """Whether ``key`` was set by someone (keyword, environment, a config
        file) rather than left at a default: a fallback from a value the user
        chose is a warning, from a default only information."""
        return self.sources.get(key, PACKAGED_SOURCE) != PACKAGED_SOURCE

    def describe(self) -> str:
        """One line per setting, ``key = value  (source)``, for a start-up log."""
        return "\n".join(
            f"{SECTION}.{key} = {getattr(self, key)!r}  ({self.sources.get(key, 'default')})"
            for key in SETTING_KEYS
        )


class SettingsOverrides(TypedDict, total=False):
    """The keyword arguments :func:`load_settings` accepts (``None``: not given)."""

    background: bool | None
    backend: Backend | None
    history: bool | None
    history_keep_ratio: float | None
    history_keep_recent: int | None
    min_render_interval: float | None
    notebook_display: bool | None
    preview_dpi: float | None
    quick_update_seconds: float | None
    render_budget: float | None
    shutdown_timeout: float | None
    viewer: bool | None
    viewer_port: int | None


def _keyword_layer(overrides: Mapping[str, Any]) -> list[_Entry]:
    entries: list[_Entry] = []
    for key, value in overrides.items():
        if key not in _SPECS:
            raise _unknown(key, KEYWORD_SOURCE, value)
        if value is not None:
            entries.append((key, value, KEYWORD_SOURCE, False))
    return entries


def _env_layer() -> list[_Entry]:
    entries: list[_Entry] = []
    for name, value in os.environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key in _SPECS:
            entries.append((key, value, f"environment variable {name}", True))
        else:
            # Not an error: other tools may share the prefix. But never silent.
            logger.warning(
                "Ignoring environment variable %s: it is not an autofit_jaxviz setting "
                "(known: %s)",
                name,
                ", ".join(env_var(k) for k in SETTING_KEYS),
            )
    return entries


def _general_file(directory: Path) -> Path | None:
    """The file autonerves reads as ``general`` in ``directory`` (same preference order)."""
    for name in ("general.ini", "general.yml", "general.yaml"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _file_sections(instance: Any) -> Iterator[tuple[Path, Any]]:
    """Each config directory's own ``jaxviz`` section, highest priority first."""
    for config in instance.configs:
        path = _general_file(Path(config.path))
        if path is None:
            continue
        try:
            section = config["general"][SECTION]
        except (KeyError, TypeError):
            continue
        if hasattr(section, "dict"):  # autonerves' DictConfig / ini SectionConfig
            try:
                section = section.dict()
            except KeyError:
                continue  # autonerves cannot list this ini section either
            if not section:
                continue  # an ini file without the section, or an empty one
        if isinstance(section, Mapping):
            section = {str(k).lower(): v for k, v in section.items()}
        yield path, section


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    return a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b))


def _workspace_layer() -> list[_Entry]:
    try:
        conf = importlib.import_module("autonerves.conf")
    except ImportError as error:
        if getattr(error, "name", None) not in ("autonerves", "autonerves.conf"):
            # Installed but broken: say so, since the workspace config goes unread.
            logger.warning(
                "autonerves is installed but cannot be imported (%s: %s); the workspace "
                "config/general.yaml '%s' section is not read",
                type(error).__name__,
                error,
                SECTION,
            )
        return []
    instance = conf.instance
    try:
        section = instance["general"][SECTION]
    except (KeyError, TypeError):
        return []
    except yaml.YAMLError as error:
        raise ConfigError(
            f"cannot read the workspace config (autonerves conf.instance paths: "
            f"{', '.join(map(str, instance.paths))}): {error}",
            source=", ".join(map(str, instance.paths)),
        ) from error

    files = list(_file_sections(instance))

    def source(key: str) -> str:
        # The merged value is what autonerves resolves; name the file it came from.
        merged = section[key]
        for path, file_section in files:
            if isinstance(file_section, Mapping) and key in file_section:
                return str(path) if _same(file_section[key], merged) else IN_MEMORY_SOURCE
        return IN_MEMORY_SOURCE

    where = str(files[0][0]) if files else IN_MEMORY_SOURCE
    return _section_entries(section, source, where)


def load_settings(**overrides: Unpack[SettingsOverrides]) -> Settings:
    """Resolve every setting (keyword > environment > workspace > packaged default).

    ``overrides`` are setting names (see :data:`SETTING_KEYS`); an unknown name
    raises :class:`ConfigError` rather than being ignored, and ``None`` means
    "not given", so callers can pass their own optional parameters straight
    through.
    """
    layers = (
        _keyword_layer(overrides),
        _env_layer(),
        _workspace_layer(),
        _packaged_layer(),
    )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        for key, raw, source, text in layer:
            value = _validate(key, raw, source, text)
            if key not in values:
                values[key] = value
                sources[key] = source
    return Settings(**values, sources=sources)  # the packaged layer sets every key


__all__ = [
    "ENV_PREFIX",
    "PACKAGED_CONFIG",
    "PACKAGED_SOURCE",
    "SECTION",
    "SETTING_KEYS",
    "ConfigError",
    "Settings",
    "SettingsOverrides",
    "env_var",
    "environment_value",
    "is_true_word",
    "load_settings",
]
