"""The configuration: frozen dataclasses (`model`) loaded from `postkontor.toml` (`loader`)."""

from postkontor.config.loader import CONFIG_NAME, ConfigError, load_config, parse_config, render_config
from postkontor.config.model import (
    Config,
    DeliveryConfig,
    LimitsConfig,
    ListenerConfig,
    ListenerKind,
    TimeoutsConfig,
    TLSConfig,
)

__all__ = [
    "CONFIG_NAME",
    "Config",
    "ConfigError",
    "DeliveryConfig",
    "LimitsConfig",
    "ListenerConfig",
    "ListenerKind",
    "TLSConfig",
    "TimeoutsConfig",
    "load_config",
    "parse_config",
    "render_config",
]
