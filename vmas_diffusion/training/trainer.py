"""The Accelerate training loop behind ``vmas-diffusion train RECIPE.yaml key=value ...``.

One loop for one CPU, one GPU, many GPUs and many machines (run it under ``accelerate launch``;
see docs/training.md): gradient accumulation, mixed precision where the device supports it,
gradient clipping, an LR schedule in optimizer steps, the :class:`~.task.VideoMusicTask` objective,
periodic validation (losses + a few generated music samples), trackers (JSON Lines, TensorBoard
when installed), atomic checkpoints that each export a loadable pipeline, and exact resumption.

Exactness. A step depends only on the weights, the optimizer state and the batch: the data order is
a function of ``(seed, step)`` (:class:`~vmas_diffusion.data.ShardDataset`), the step's randomness is
seeded per sample (:mod:`.task`), the LR schedule counts optimizer steps. So a run killed at any point
and resumed from its last checkpoint logs the same per-step losses as an unbroken run, and a job on W
processes follows a one-process job with the same global batch.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from omegaconf import OmegaConf

from ..building import build_training_components
from ..errors import CheckpointError, ConfigError
from ..recipes import RecipeLike, load_recipe
from .checkpoints import CheckpointManager, checkpoint_problem, latest_checkpoint, recover
from .task import VideoMusicTask, batch_to_device, conditions_for_generation, item_generators
from .trackers import make_trackers

logger = logging.getLogger(__name__)

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
VALIDATION_SALT = 0x5A17


@dataclass
class TrainResult:
    output_dir: Path
    step: int
    #: per-step training loss of this process's run (the logged value, mean over processes)
    losses: Dict[int, float] = field(default_factory=dict)
    last_checkpoint: Optional[Path] = None


def resolve_mixed_precision(value: str) -> Optional[str]:
    """``train.mixed_precision`` -> an Accelerate value (None lets ``accelerate launch`` decide)."""
    import os

    if value not in MIXED_PRECISION:
        raise ConfigError(f"train.mixed_precision must be one of {MIXED_PRECISION}, got {value!r}")
    if value != "auto":
        return value
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None  # chosen on the launcher's command line or config
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _check_train_spec(cfg) -> None:
    t = cfg.train
    problems = []
    for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "log_every", "checkpoint_every", "validate_every"):
        if getattr(t, name) < 1:
            problems.append(f"train.{name} must be >= 1 (got {getattr(t, name)})")
    if t.learning_rate <= 0:
        problems.append(f"train.learning_rate must be > 0 (got {t.learning_rate})")
    if t.max_grad_norm < 0:
        problems.append(f"train.max_grad_norm must be >= 0 (got {t.max_grad_norm})")
    if t.ema_decay is not None and not 0 < t.ema_decay < 1:
        problems.append(f"train.ema_decay must be in (0, 1) or null (got {t.ema_decay})")
    if cfg.data.train_dir is None:
        problems.append("data.train_dir is not set (the folder `vmas-diffusion prepare` wrote)")
    if problems:
        raise ConfigError("; ".join(problems))
    resolve_mixed_precision(t.mixed_precision)
    from ..data.sources import read_folders

    for folder in (cfg.data.train_dir, cfg.data.val_dir):
        if folder is not None:
            read_folders(folder)  # a missing or empty data folder fails before any model is built


def _load_pipeline(folder):
    """``train.init_from`` -> a saved VideoToMusicPipeline (training sits above the pipeline)."""
    from ..pipelines import VideoToMusicPipeline

    return VideoToMusicPipeline.from_pretrained(folder)


def _param_groups(task: torch.nn.Module, weight_decay: float) -> List[dict]:
    """AdamW groups: no weight decay on biases, norms, embeddings-like 1-D parameters."""
    decay, no_decay = [], []
    for _, param in task.named_parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Builds everything from a validated recipe and runs the loop (see :func:`train`)."""

    def __init__(self, cfg, resume: Optional[str] = None, progress: bool = True, step_callbacks: Sequence[Callable] = ()):
        from accelerate import Accelerator, DistributedDataParallelKwargs
        from accelerate.utils import DistributedType, set_seed
        from diffusers.optimization import get_scheduler

        _check_train_spec(cfg)
        self.cfg = cfg
        t = cfg.train
        self.output_dir = Path(t.output_dir or Path("runs") / cfg.name)
        self.progress = progress
        self.step_callbacks = list(step_callbacks)
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),
            mixed_precision=resolve_mixed_precision(t.mixed_precision),
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            log_with=make_trackers(t.trackers, "logs", self.output_dir),
            project_dir=str(self.output_dir),
            # the LR schedule counts optimizer steps, whatever the number of processes
            step_scheduler_with_optimizer=False,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=t.find_unused_parameters)],
        )
        acc = self.accelerator
        set_seed(t.seed)  # identical initial weights on every process
        components = build_training_components(cfg, load_pipeline=_load_pipeline)
        self.codec = components["codec"].requires_grad_(False).eval()
        self.components = components
        # several processes: each loss is normalised by its global count of elements (see task.py)
        mean = (lambda x: acc.reduce(x, reduction="mean")) if acc.num_processes > 1 else None  # noqa: E731
        self.task = VideoMusicTask(
            components["video_encoder"], components["generator"], components["contrastive_head"], cfg.losses, seed=t.seed,
            mean_over_processes=mean,
        )
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.task, t.weight_decay), lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), eps=t.adam_epsilon
        )
        try:
            self.lr_scheduler = get_scheduler(
                t.lr_scheduler, self.optimizer, num_warmup_steps=t.warmup_steps, num_training_steps=t.max_steps
            )
        except ValueError as err:
            raise ConfigError(f"train.lr_scheduler: {err}") from err
        self.task, self.optimizer = acc.prepare(self.task, self.optimizer)
        self.codec.to(acc.device)
        self.ema = None
        if t.ema_decay is not None:
            generator = acc.unwrap_model(self.task).generator
            if not hasattr(generator, "create_ema"):
                raise ConfigError(f"train.ema_decay: the {generator.backend} generator has no EMA support")
            self.ema = generator.create_ema(decay=t.ema_decay)
            self.ema.to(acc.device)
        # DeepSpeed / FSDP split parameters and optimizer state across processes
        self.sharded = acc.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
        self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", t.keep_checkpoints)
        self.step = 0
        self.micro_step = 0  # local micro-batches consumed (same on every process)
        if resume:
            self._resume(resume)
        acc.init_trackers("logs", config=_flat_config(cfg))

    # ------------------------------------------------------------------ resume
    def _resume(self, resume: str) -> None:
        if resume == "auto":
            if self.accelerator.is_main_process:
                recover(self.checkpoints.root)  # finish or undo a save that a kill interrupted
            self.accelerator.wait_for_everyone()
        folder = latest_checkpoint(self.checkpoints.root) if resume == "auto" else Path(resume)
        if folder is None:
            logger.info("no checkpoint under %s: starting from step 0", self.checkpoints.root)
            return
        problem = checkpoint_problem(folder)
        if problem is not None:
            raise CheckpointError(f"{folder} is not a finished training checkpoint: {problem}")
        state = CheckpointManager.load(self.accelerator, folder, self.task, self.optimizer, self.lr_scheduler, self.ema)
        world = self.accelerator.num_processes
        if state.get("world_size") != world or state.get("batch_size") != self.cfg.train.batch_size:
            logger.warning(
                "resuming %s saved with %s processes x batch %s on %d x %d: the data order continues by position",
                folder, state.get("world_size"), state.get("batch_size"), world, self.cfg.train.batch_size,
            )
        self.step = int(state["step"])
        self.micro_step = int(state["micro_step"])
        self.accelerator.print(f"resumed from {folder} at step {self.step}")

    # ------------------------------------------------------------------ data
    def _loader(self, data_dir: str, start_batch: int, shuffle: bool, num_batches: Optional[int], split: Optional[str] = None):
        from torch.utils.data import DataLoader

        from ..data import ShardDataset

        acc = self.accelerator
        dataset = ShardDataset(
            data_dir,
            batch_size=self.cfg.train.batch_size,
            rank=acc.process_index,
            world_size=acc.num_processes,
            seed=self.cfg.train.seed,
            shuffle=shuffle,
            split=split or self.cfg.data.split,
            start_batch=start_batch,
            num_batches=num_batches,
        )
        workers = self.cfg.train.num_workers
        # own generator: creating the iterator must not draw from the global RNG (exact resume)
        return dataset, DataLoader(
            dataset, batch_size=None, num_workers=workers, generator=torch.Generator(), persistent_workers=False,
            prefetch_factor=2 if workers else None,
        )

    # ------------------------------------------------------------------ loop
    def run(self) -> TrainResult:
        acc, t = self.accelerator, self.cfg.train
        dataset, loader = self._loader(self.cfg.data.train_dir, self.micro_step, self.cfg.data.shuffle, None)
        self._check_data(dataset)
        result = TrainResult(output_dir=self.output_dir, step=self.step)
        data = iter(loader)
        from tqdm.auto import tqdm

        bar = tqdm(total=t.max_steps, initial=self.step, desc="train", unit="step", disable=not (self.progress and acc.is_main_process))
        self.task.train()
        window: List[Dict[str, torch.Tensor]] = []
        started, first_micro_step = time.time(), self.micro_step
        while self.step < t.max_steps:
            batch = batch_to_device(next(data), acc.device)
            self.micro_step += 1
            with acc.accumulate(self.task):
                loss, terms, metrics = self.task(batch)
                acc.backward(loss)
                grad_norm = None
                if acc.sync_gradients and t.max_grad_norm > 0:
                    grad_norm = acc.clip_grad_norm_(self.task.parameters(), t.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            window.append({"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}, **metrics})
            if not acc.sync_gradients:
                continue
            if not acc.optimizer_step_was_skipped:
                self.lr_scheduler.step()
            if self.ema is not None:
                self.ema.step(acc.unwrap_model(self.task).generator.parameters())
            self.step += 1
            values = self._reduce(window)
            window = []
            result.losses[self.step] = values["loss"]
            if self.step % t.log_every == 0 or self.step == t.max_steps:
                values["lr"] = self.lr_scheduler.get_last_lr()[0]
                if grad_norm is not None:
                    values["grad_norm"] = float(grad_norm)
                done = self.micro_step - first_micro_step
                values["samples_per_s"] = done * t.batch_size * acc.num_processes / max(time.time() - started, 1e-9)
                acc.log(values, step=self.step)
                bar.set_postfix(loss=f"{values['loss']:.4f}")
            bar.update(1)
            for callback in self.step_callbacks:
                callback(self.step, values)
            if self.step % t.validate_every == 0 or self.step == t.max_steps:
                self.validate()
            if self.step % t.checkpoint_every == 0 or self.step == t.max_steps:
                result.last_checkpoint = self.save()
        bar.close()
        acc.end_training()
        result.step = self.step
        return result

    def _check_data(self, dataset) -> None:
        gen = self.accelerator.unwrap_model(self.task).generator
        enc = self.accelerator.unwrap_model(self.task).video_encoder
        if dataset.info.get("options", {}).get("video_input") == "features" and not getattr(enc, "backbone_frozen", False):
            raise ConfigError(
                f"{dataset.data_dir} holds frozen backbone features, but the video encoder trains its backbone: "
                "freeze it (freeze_backbone: true) or prepare with data.video_input=frames"
            )
        if abs(dataset.video_fps - float(enc.config.fps)) > 1e-6:
            raise ConfigError(
                f"{dataset.data_dir} was prepared at {dataset.video_fps} fps but the video encoder runs at {enc.config.fps}"
            )
        if abs(dataset.music_frame_rate - float(gen.config.frame_rate)) > 1e-6:
            raise ConfigError(
                f"{dataset.data_dir} holds music at {dataset.music_frame_rate} frames/s but the generator models "
                f"{gen.config.frame_rate}: prepare it with this recipe's codec"
            )

    def _reduce(self, window: List[Dict[str, torch.Tensor]]) -> Dict[str, float]:
        """Mean over the accumulated micro-batches, then over processes (one collective per step)."""
        keys = sorted(window[0])
        local = torch.stack([torch.stack([w[k].float() for w in window]).mean() for k in keys]).to(self.accelerator.device)
        mean = self.accelerator.reduce(local, reduction="mean")
        return {k: float(v) for k, v in zip(keys, mean.tolist())}

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Validation losses (logged as ``val/<name>``) and a few generated samples under ``samples/step-N``."""
        acc, t = self.accelerator, self.cfg.train
        task = acc.unwrap_model(self.task)
        task.eval()
        data_dir = self.cfg.data.val_dir or self.cfg.data.train_dir
        _, loader = self._loader(data_dir, 0, shuffle=False, num_batches=t.validation_batches, split="sample")
        window = []
        first_batch = None
        for batch in loader:
            batch = batch_to_device(batch, acc.device)
            if first_batch is None:
                first_batch = batch
            with acc.autocast():
                loss, terms, metrics = task(batch, salt=VALIDATION_SALT)
            window.append({"loss": loss, **terms, **metrics})
        values = {f"val/{k}": v for k, v in self._reduce(window).items()}
        acc.log(values, step=self.step)
        acc.print(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        if acc.is_main_process and t.num_validation_samples > 0 and first_batch is not None:
            self._write_samples(task, first_batch)
        acc.wait_for_everyone()
        task.train()
        return values

    def _write_samples(self, task: VideoMusicTask, batch: Dict[str, torch.Tensor]) -> List[Path]:
        from ..media import save_audio

        t = self.cfg.train
        n = min(t.num_validation_samples, batch["uid"].shape[0])
        batch = {k: v[:n] for k, v in batch.items()}
        conditions = conditions_for_generation(task, batch)
        num_frames = int(batch["music_mask"].sum(1).max())
        generators = item_generators(t.seed, batch["uid"], VALIDATION_SALT)
        with self.accelerator.autocast():
            audio = task.generator.generate_audio(
                self.codec, conditions, num_frames, scheduler=self.components["scheduler"],
                num_inference_steps=t.validation_inference_steps, guidance_scale=t.validation_guidance_scale,
                generator=generators,
            )
        out_dir = self.output_dir / "samples" / f"step-{self.step:08d}"
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        hop = self.codec.sample_rate / self.codec.frame_rate
        for i in range(n):
            length = int(round(int(batch["music_mask"][i].sum()) * hop))
            path = out_dir / f"sample_{i}_uid{int(batch['uid'][i])}.wav"
            save_audio(str(path), audio[i, :, :length].float().clamp(-1, 1).cpu().numpy(), int(self.codec.sample_rate))
            paths.append(path)
        return paths

    # ------------------------------------------------------------------ checkpoints
    def export_pipeline(self, folder: Path, full_state: Optional[dict] = None) -> None:
        """Write a ``VideoToMusicPipeline.from_pretrained`` folder of the current weights (EMA for the generator when kept).

        ``full_state``: the gathered state dict of a sharded (DeepSpeed / FSDP) run, loaded into a fresh copy.
        """
        import copy

        from ..pipelines import VideoToMusicPipeline

        task = self.accelerator.unwrap_model(self.task)
        if full_state is not None:
            task = copy.deepcopy(task).cpu()
            task.load_state_dict({k: v.cpu() for k, v in full_state.items()}, strict=False)
        generator = task.generator
        if self.ema is not None:
            generator = copy.deepcopy(generator)
            self.ema.copy_to(generator.parameters())
        pipe = VideoToMusicPipeline(
            video_encoder=task.video_encoder,
            generator=generator,
            codec=self.codec,
            scheduler=self.components["scheduler"],
            contrastive_head=self.components["contrastive_head"],
        )
        pipe.save_pretrained(str(folder), safe_serialization=True, model_card=self._model_card())

    def _model_card(self) -> dict:
        """What the exported pipeline's model card can say from the run itself (vmas_diffusion.model_card)."""
        cfg, t = self.cfg, self.cfg.train
        data = cfg.data.train_dir
        data = ", ".join(map(str, data)) if not isinstance(data, str) else data
        card = {
            "name": f"{cfg.name} (step {self.step})",
            "training_data": f"Recipe `{cfg.name}`: {self.step} optimiser steps of {t.batch_size} windows x "
            f"{self.accelerator.num_processes} process(es) x {t.gradient_accumulation_steps} accumulation step(s) "
            f"from the shards in `{data}` ({cfg.data.window_seconds:g} s windows).",
            "alignment": "Not measured by training: run `vmas-diffusion evaluate` or `scripts/evaluate_alignment.py` "
            "and save the pipeline again with `model_card={..., 'alignment': TABLE}`.",
        }
        if t.init_from:
            card["base_model"] = str(t.init_from)
        return card

    def save(self) -> Path:
        state = {
            "step": self.step,
            "micro_step": self.micro_step,
            "world_size": self.accelerator.num_processes,
            "batch_size": self.cfg.train.batch_size,
            "recipe": OmegaConf.to_container(self.cfg, resolve=True),
        }
        export = self.export_pipeline
        if self.sharded:  # gathering the full weights is a collective: every process takes part
            full_state = self.accelerator.get_state_dict(self.task)
            export = lambda folder: self.export_pipeline(folder, full_state)  # noqa: E731
        folder = self.checkpoints.save(
            self.accelerator, self.step, self.task, self.optimizer, self.lr_scheduler, state,
            export_pipeline=export, ema=self.ema, sharded=self.sharded,
        )
        self.accelerator.print(f"saved checkpoint {folder}")
        return folder


def _flat_config(cfg) -> dict:
    """Hyperparameters for the trackers (flat ``section.key`` -> scalar)."""
    flat = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, (list, tuple)):
            flat[prefix] = str(node)
        else:
            flat[prefix] = node

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return flat


def train(
    recipe: RecipeLike,
    overrides: Optional[Sequence[str]] = None,
    resume: Optional[str] = None,
    progress: bool = True,
    step_callbacks: Sequence[Callable] = (),
) -> TrainResult:
    """Train from a recipe (path, dict or DictConfig) plus ``key=value`` overrides.

    Args:
        resume: None (fresh start), ``"auto"`` (the latest checkpoint under the run's folder, if any)
            or a checkpoint folder.
        step_callbacks: ``callback(step, logged_values)`` after every optimizer step.
    """
    cfg = load_recipe(recipe, list(overrides or []))
    return Trainer(cfg, resume=resume, progress=progress, step_callbacks=step_callbacks).run()
