"""Typed run configuration: the schema (:mod:`.schema`), YAML loading with ``_base_``
inheritance and overrides (:mod:`.loading`), and one schema per method (:mod:`.methods`).

Importing this package imports neither torch nor any method, so that reading a
config (``vireid config``) is instant.
"""

from vireid.config.loading import (
    SCHEMA_PACKAGE,
    apply_overrides,
    builtin_method_names,
    cfg_to_yaml,
    config_from_dict,
    dump_config,
    get_method_schema,
    load_config,
    parse_override,
    register_method_schema,
    registered_method_schemas,
)
from vireid.config.schema import (
    CLIP_MEAN,
    CLIP_STD,
    DATA_ENV_VAR,
    DATASET_FOLDERS,
    IMAGE_DATASETS,
    VIDEO_DATASETS,
    AugmentConfig,
    Config,
    ConfigError,
    ConfigFieldError,
    ConfigIssue,
    DataConfig,
    EvalConfig,
    LogConfig,
    MethodConfig,
    ModelConfig,
    RerankConfig,
    StageConfig,
    TrainConfig,
    VideoConfig,
    resolve_data_root,
)

__all__ = [
    "AugmentConfig", "CLIP_MEAN", "CLIP_STD", "Config", "ConfigError", "ConfigFieldError",
    "ConfigIssue", "DATASET_FOLDERS", "DATA_ENV_VAR", "DataConfig", "EvalConfig",
    "IMAGE_DATASETS", "LogConfig", "MethodConfig", "ModelConfig", "RerankConfig",
    "SCHEMA_PACKAGE", "StageConfig", "TrainConfig", "VIDEO_DATASETS", "VideoConfig",
    "apply_overrides", "builtin_method_names", "cfg_to_yaml", "config_from_dict", "dump_config",
    "get_method_schema", "load_config", "parse_override", "register_method_schema",
    "registered_method_schemas", "resolve_data_root",
]
