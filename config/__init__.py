"""ssdkit.config: the training/evaluation configuration (frozen dataclasses), presets as TOML files."""
from ssdkit.config.loader import apply_overrides, list_presets, load_config, preset_path
from ssdkit.config.schema import (AugmentConfig, Config, DataConfig, EvalConfig, FPNConfig, ModelConfig,
                                  RuntimeConfig, SolverConfig)

__all__ = ["AugmentConfig", "Config", "DataConfig", "EvalConfig", "FPNConfig", "ModelConfig", "RuntimeConfig",
           "SolverConfig", "apply_overrides", "list_presets", "load_config", "preset_path"]
