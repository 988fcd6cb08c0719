"""Training engine: the stage loop, optimiser and schedule, checkpoints, DDP, logging.

Typical use::

    from vireid.engine import Trainer, init_distributed

    init_distributed()            # no-op outside torchrun
    method = build_method(cfg)    # builds its samplers with get_rank()/get_world_size()
    metrics = Trainer(method, cfg, cfg.run_dir, evaluate=my_eval).fit()
"""

from vireid.engine.checkpoint import (
    CheckpointError,
    atomic_save,
    capture_rng_state,
    load_checkpoint,
    load_method_weights,
    restore_rng_state,
)
from vireid.engine.distributed import (
    DistInfo,
    GradientAverager,
    all_reduce_mean,
    barrier,
    broadcast_module,
    broadcast_object,
    cleanup_distributed,
    dist_info,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
)
from vireid.engine.logger import RunLogger, read_metrics, stage_losses
from vireid.engine.optim import build_optimizer
from vireid.engine.schedulers import StageScheduler, lr_at
from vireid.engine.trainer import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    NonFiniteLossError,
    Trainer,
    TrainerHook,
    move_to_device,
    resolve_device,
    seed_everything,
)

__all__ = [
    "CHECKPOINT_DIR",
    "CheckpointError",
    "DistInfo",
    "GradientAverager",
    "LAST_CHECKPOINT",
    "NonFiniteLossError",
    "RunLogger",
    "StageScheduler",
    "Trainer",
    "TrainerHook",
    "all_reduce_mean",
    "atomic_save",
    "barrier",
    "broadcast_module",
    "broadcast_object",
    "build_optimizer",
    "capture_rng_state",
    "cleanup_distributed",
    "dist_info",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "load_checkpoint",
    "load_method_weights",
    "lr_at",
    "move_to_device",
    "read_metrics",
    "stage_losses",
    "resolve_device",
    "restore_rng_state",
    "seed_everything",
]
