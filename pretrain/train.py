"""The pretraining loop: `train(config, evaluators=...)`.

One step: take `accum_steps` micro-batches, forward/backward them (GradCache when more than one,
grad_cache.py; on a CPU, one batch in parts on parallel threads, batch_split.py), clip the gradient
norm, AdamW step, clamp the temperature, update the weight average (ema_decay, ema.py); with
`distill.teacher` set, the loss adds distillation against a frozen teacher's features of the same
batch (teacher.py). Around it: logging, periodic evaluation and checkpoints, resume, and stopping
cleanly on signals or a non-finite loss.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from tqdm import tqdm

from data_tools.atomic_write import write_json_atomic
from data_tools.loader import count_samples
from data_tools.token_cache import CachedTokenizer
from pretrain import checkpoint, models, precision
from pretrain.batch_split import batch_split_for
from pretrain.config import TrainConfig, save_config, validate
from pretrain.cpu_memory import keep_freed_memory
from pretrain.data_stream import BatchStream, EpochFactory, SkipTally, shard_epochs, train_transform
from pretrain.distributed import Distributed, replicated_parameters, shard_like
from pretrain.ema import WeightAverage
from pretrain.errors import PretrainError
from pretrain.grad_cache import forward_backward
from pretrain.in_loop_eval import InLoopEvaluator, run_evaluators
from pretrain.losses import clip_loss, multi_positive_clip_loss, siglip_loss
from pretrain.optim import WarmupCosine, build_optimizer, load_optimizer_state, set_lr
from pretrain.rng_state import capture_rng, restore_rng, seed_everything
from pretrain.run_log import CURVES_FILE, RunLog, plot_curves
from pretrain.stop_signals import StopSignals
from pretrain.teacher import Distiller, TeacherFeatures
from pretrain.trained_towers import build_towers

LOG = logging.getLogger("pretrain")


@dataclass(kw_only=True)
class TrainResult:
    """How a run ended."""

    run_dir: Path
    step: int
    checkpoint: Path | None
    loss: float
    stopped_by: str = ""  # signal name when stopped early, "" when finished
    main_process: bool = True  # False on the other processes of a distributed run
    metrics: dict[str, float] = field(default_factory=dict)


def train(config: TrainConfig, *, evaluators: Sequence[InLoopEvaluator] = (),
          make_epoch: EpochFactory | None = None, dist: Distributed | None = None) -> TrainResult:
    """Train per `config`; `make_epoch` (epoch -> batches) replaces the shard loader (tests)."""
    validate(config)
    return Trainer(config, evaluators=evaluators, make_epoch=make_epoch, dist=dist or Distributed()).run()


class Trainer:
    """The state of one run; `run()` is the loop."""

    def __init__(self, config: TrainConfig, *, evaluators: Sequence[InLoopEvaluator],
                 make_epoch: EpochFactory | None, dist: Distributed) -> None:
        self.config, self.evaluators, self.dist = config, list(evaluators), dist
        self.run_dir = config.run_dir
        self.step, self.samples_seen, self.elapsed_before = 0, 0, 0.0
        self.last_checkpoint: Path | None = None
        self.last_metrics: dict[str, float] = {}
        self.paused_s = 0.0  # time spent evaluating and saving: not training time
        self.skipped: SkipTally | None = None
        _set_runtime(config, dist.device)
        self.precision, why = precision.choose_precision(config.precision, dist.device)
        self.autocast = precision.autocast(self.precision, dist.device)
        self.towers = build_towers(config, dist.device, sharded=self.sharded, processes=dist.world_size)
        self.distiller = Distiller(config.distill, student=self.towers, device=dist.device, autocast=self.autocast,
                                   gather=dist.gather_with_grad) if config.distill.teacher else None
        self.distill_terms: dict[str, torch.Tensor] = {}  # the last step's distillation terms, for the log
        torch.manual_seed(config.seed * 1000 + dist.rank)  # each process its own dropout/augmentation draws
        self.schedule = WarmupCosine(lr=config.optim.lr, min_lr=config.optim.min_lr,
                                     warmup_steps=config.optim.warmup_steps, total_steps=config.steps,
                                     total_seconds=config.time_budget_min * 60 if config.time_budget_min else None)
        train_state = self._resume_weights()
        if config.compile:
            models.compile_towers(self.towers)
        self.split, split_note = batch_split_for(config, self.towers, device=dist.device, processes=dist.world_size)
        self.model = dist.prepare(self.towers, shard=self.sharded)
        # after prepare: FSDP replaces the parameters with sharded ones
        self.optimizer = build_optimizer(self.towers, config.optim, dist.device)
        if self.distiller is not None:
            self.distiller.add_to_optimizer(self.optimizer, config.optim.weight_decay)
        # trained parameters whose gradients neither DDP nor FSDP averages
        self.replicated = replicated_parameters(self.model) + (self.distiller.parameters() if self.distiller else [])
        self.average = WeightAverage(self.towers.clip, config.ema_decay) if config.ema_decay else None
        if train_state is not None:
            self._resume_optimizer(train_state)
        self.stream = self._open_stream(make_epoch, train_state)
        # samples in the training shards (dataset.json), to report epochs; None if unknown
        self.stream_samples = count_samples(config.data.train_data) if make_epoch is None else None
        if train_state is not None and train_state["world_size"] == dist.world_size:
            restore_rng(train_state["rng"][dist.rank])  # after the stream replayed its batches
        self.log = RunLog(self.run_dir, enabled=dist.is_main,
                          truncate_after_step=self.step if train_state is not None else None)
        if dist.is_main:
            save_config(config, self.run_dir)
            LOG.info("precision %s (%s); %d process%s%s; contrastive batch %d, %s; run dir %s", self.precision, why,
                     dist.world_size, "es" if dist.world_size > 1 else "", ", weights sharded (FSDP)" if self.sharded
                     else "", self.global_batch, split_note, self.run_dir)
            if config.distributed.fsdp and not self.sharded:
                LOG.info("distributed.fsdp=true with one process: nothing to shard, the model stays whole")

    @property
    def sharded(self) -> bool:
        """FSDP: several processes share the trained weights (one process has nothing to shard)."""
        return self.config.distributed.fsdp and self.dist.world_size > 1

    @property
    def global_batch(self) -> int:
        return self.config.data.batch_size * self.config.data.accum_steps * self.dist.world_size

    def _resume_weights(self) -> dict[str, Any] | None:
        """Load weights and counters from the checkpoint `resume` names (before the model is wrapped);
        returns its train state for `_resume_optimizer`, None if fresh."""
        if not self.config.resume:
            return None
        source = self.run_dir if self.config.resume == "latest" else Path(self.config.resume)
        ckpt = checkpoint.find_latest(source) if source.exists() else None
        if ckpt is None:
            if self.config.resume == "latest":
                LOG.info("resume latest: no checkpoint in %s yet, starting fresh", self.run_dir)
                return None
            checkpoint.resolve_checkpoint(source)  # raises with what to pass
        state = checkpoint.read_train_state(ckpt)
        try:
            self.towers.clip.load_state_dict(checkpoint.read_weights(ckpt), strict=True)
        except RuntimeError as err:
            saved = checkpoint.read_model_info(ckpt).get("model_name")
            raise PretrainError(f"cannot resume from {ckpt}: it holds model {saved!r}, this run builds "
                                f"{self.towers.name!r}; resume with the run's own config (its config.json)") from err
        if self.distiller is not None:
            self.distiller.load_state_dict(state.get("distill"))
        if self.config.ema_decay and state.get("ema") is not None:
            # model.safetensors holds the average; the raw trained weights are in the train state
            self.towers.clip.load_state_dict(state["raw_weights"], strict=False)
        self.schedule.load_state_dict(state["schedule"])
        self.step, self.samples_seen = state["step"], state["samples_seen"]
        self.elapsed_before, self.last_checkpoint = state["elapsed_s"], ckpt
        LOG.info("resumed from %s at step %d", ckpt, self.step)
        return state

    def _resume_optimizer(self, state: dict[str, Any]) -> None:
        """Optimizer and weight-average state (saved whole), split like the parameters when sharded."""
        try:
            load_optimizer_state(self.optimizer, state["optimizer"])
        except ValueError as err:  # other parameter groups: locking or distillation differ
            raise PretrainError(f"cannot resume from {self.last_checkpoint}: its optimizer state does not fit this "
                                "run's trained parameters; resume with the run's own config (its config.json)") from err
        if self.average is not None and state.get("ema") is not None:
            weights = self.towers.clip.state_dict()
            shadow = {key: shard_like(value, weights[key]) for key, value in state["ema"]["shadow"].items()}
            self.average.load_state_dict({**state["ema"], "shadow": shadow})

    def _open_stream(self, make_epoch: EpochFactory | None, state: dict[str, Any] | None) -> BatchStream:
        cfg, dist = self.config, self.dist
        if make_epoch is None:
            if not cfg.data.train_data:
                raise PretrainError("no training data: pass `data.train_data` DIR (a shard directory)")
            images = train_transform(cfg.data, self.towers.clip.visual.preprocess_cfg)
            make_epoch, self.skipped = shard_epochs(
                cfg.data, images=images, tokenize=CachedTokenizer(open_clip.get_tokenizer(self.towers.name)),
                seed=cfg.seed, rank=dist.rank, world_size=dist.world_size)
        position = {"epoch": 0, "batch_in_epoch": 0}
        endless = dist.world_size > 1 or cfg.data.train_data_weights is not None  # resampled shard streams
        if state is not None and state["world_size"] == dist.world_size and not endless:
            position = state["data_position"][0]  # exact: replay to the same batch
        elif state is not None:
            position = {"epoch": state["step"], "batch_in_epoch": 0}  # endless streams: a fresh seeded one
        return BatchStream(make_epoch, seed=cfg.seed, rank=dist.rank, **position)

    def _loss(self, out: dict[str, torch.Tensor], teacher: TeacherFeatures | None = None,
              groups: torch.Tensor | None = None) -> torch.Tensor:
        """The contrastive loss of the step's whole batch, plus distillation when there is a teacher."""
        if teacher is None:
            return self._contrastive_loss(out, groups)
        distill = self.distiller.loss(out, teacher)
        self.distill_terms = {"distill_kl": distill["kl"], "distill_feature": distill["feature"]}
        return self._contrastive_loss(out, groups) + distill["loss"]

    def _contrastive_loss(self, out: dict[str, torch.Tensor], groups: torch.Tensor | None) -> torch.Tensor:
        """`groups` (N,) concept ids of the step's pairs: with loss.positives=group, same id = positive."""
        cfg, dist = self.config.loss, self.dist
        features = (out["image_features"], out["text_features"], out["logit_scale"])  # what every loss scores
        across = {"gather": dist.gather_with_grad, "rank": dist.rank}  # the global batch of all processes
        groups = groups if cfg.positives == "group" else None
        if cfg.kind == "siglip":
            return siglip_loss(*features, out["logit_bias"], **across, groups=groups)
        if groups is None and cfg.soft_targets:  # soft targets around one positive per pair
            batch = out["image_features"].shape[0]
            groups = torch.arange(batch, device=out["image_features"].device) + dist.rank * batch
        clip = {**across, "local_loss": cfg.local_loss, "max_logit_scale": cfg.max_logit_scale}
        if groups is not None:
            return multi_positive_clip_loss(*features, groups, **clip, soft_weight=cfg.soft_targets,
                                            soft_temperature=cfg.soft_temperature)
        return clip_loss(*features, **clip)

    def _micro_batches(self) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], TeacherFeatures | None,
                                      torch.Tensor | None]:
        """The step's micro-batches on the device, the teacher's features of them (if distilling), and
        their concept ids in batch order (None when the batches carry none)."""
        device = self.dist.device
        batches = [next(self.stream) for _ in range(self.config.data.accum_steps)]
        micro = [(b["image"].to(device, non_blocking=True), b["text"].to(device, non_blocking=True))
                 for b in batches]
        groups = torch.cat([b["group"] for b in batches]).to(device) if all("group" in b for b in batches) else None
        captions = [b.get("caption") for b in batches]
        teacher = self.distiller.teach([images for images, _ in micro], captions) if self.distiller else None
        return micro, teacher, groups

    def _train_step(self, elapsed_s: float) -> tuple[float, float]:
        """One optimizer step; returns (loss averaged over processes, lr)."""
        lr = self.schedule(self.step, elapsed_s)
        set_lr(self.optimizer, lr)
        micro_batches, teacher, groups = self._micro_batches()
        loss = (self.split.forward_backward if self.split else forward_backward)(
            self.model, micro_batches, loss_fn=functools.partial(self._loss, teacher=teacher, groups=groups),
            autocast=self.autocast, dist=self.dist)
        loss_value = self.dist.mean(loss.item())
        if not math.isfinite(loss_value):
            self._fail_non_finite(f"loss is {loss_value}")
        self.dist.average_gradients(self.replicated)
        params = [p for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
        if self.config.optim.grad_clip_norm > 0:
            norm = self.dist.clip_grad_norm(params, self.config.optim.grad_clip_norm)
            if not math.isfinite(norm):
                self._fail_non_finite(f"gradient norm is {norm}")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():  # CLIP's clamp: temperature no lower than 1/max_logit_scale
            self.towers.clip.logit_scale.clamp_(0, math.log(self.config.loss.max_logit_scale))
        if self.average is not None:
            self.average.update(self.towers.clip)
        return loss_value, lr

    def _fail_non_finite(self, what: str) -> None:
        kept = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint yet"
        self.log.close()
        raise PretrainError(f"{what} at step {self.step + 1}: stopped; {kept} "
                            "(resume from it with a lower optim.lr, or precision=fp32)")

    def _elapsed(self, started: float) -> float:
        """Seconds trained so far (evaluation and checkpoint writing excluded), identical on every
        process (the time schedule depends on it)."""
        elapsed = self.elapsed_before + time.perf_counter() - started - self.paused_s
        return self.dist.mean(elapsed) if self.config.time_budget_min else elapsed

    def _finished(self, elapsed_s: float) -> bool:
        budget_s = (self.config.time_budget_min or 0) * 60
        return self.step >= self.config.steps or (budget_s > 0 and elapsed_s >= budget_s)

    def run(self) -> TrainResult:
        cfg, dist = self.config, self.dist
        started = time.perf_counter()
        bar = self._progress_bar()
        window_start, window_samples, loss, stopped_by = time.perf_counter(), 0, float("nan"), ""
        with StopSignals() as signals:
            while not self._finished(elapsed := self._elapsed(started)):
                loss, lr = self._train_step(elapsed)
                self.step += 1
                self.samples_seen += self.global_batch
                window_samples += self.global_batch
                bar.update(1 if not cfg.time_budget_min else int(self._elapsed(started)) - bar.n)
                if self.step % cfg.log_every == 0:
                    rate = window_samples / max(time.perf_counter() - window_start, 1e-9)
                    self._log_train(loss, lr, rate, bar)
                    window_start, window_samples = time.perf_counter(), 0
                if dist.any(signals.received is not None):
                    stopped_by = signals.name or "signal"
                    break
                window_start += self._evaluate_and_save(started)  # samples/s counts training time only
        bar.close()
        return self._finish(loss, started, stopped_by)

    def _progress_bar(self) -> tqdm:
        """Steps out of `steps`, or, for a timed run, seconds out of the budget (so the ETA is right)."""
        show = self.config.progress and self.dist.is_main
        if self.config.time_budget_min:
            return tqdm(total=int(self.config.time_budget_min * 60), initial=int(self.elapsed_before), unit="s",
                        disable=not show, dynamic_ncols=True)
        return tqdm(total=self.config.steps, initial=self.step, unit="step", disable=not show, dynamic_ncols=True)

    def _evaluate_and_save(self, started: float) -> float:
        """Periodic evaluation and checkpoint; returns the seconds they took (not training time)."""
        pause_start = time.perf_counter()
        if self.config.eval_every and self.step % self.config.eval_every == 0:
            self._evaluate()
        if self.step % self.config.checkpoint_every == 0:
            self._save(started)
        paused = time.perf_counter() - pause_start
        self.paused_s += paused
        return paused

    def _log_train(self, loss: float, lr: float, samples_per_s: float, bar: tqdm) -> None:
        epoch = self.samples_seen / self.stream_samples if self.stream_samples else None
        row = {"step": self.step, "loss": loss, "lr": lr,
               "logit_scale": float(self.towers.clip.logit_scale.detach().exp()),
               "samples_per_s": samples_per_s, "epoch": epoch}
        row.update({name: self.dist.mean(float(value)) for name, value in self.distill_terms.items()})
        self.log.write(row)
        bar.set_postfix(step=self.step, loss=f"{loss:.4f}", samples_s=f"{samples_per_s:.0f}")

    def _evaluate(self) -> dict[str, float]:
        if not self.evaluators:
            return {}
        metrics: dict[str, float] = {}
        if self.dist.is_main or self.sharded:  # a sharded model's forward needs every process
            average = self.average.swapped_in(self.towers.clip) if self.average else contextlib.nullcontext()
            with average, self.dist.whole_weights(self.model):
                metrics = run_evaluators(self.evaluators, self.towers.clip, model_name=self.towers.name)
            self.towers.train()
        if self.dist.is_main:
            self.log.write({"step": self.step, **metrics}, prefix="eval")
            self.last_metrics = metrics
            LOG.info("step %d eval: %s", self.step, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        self.dist.barrier()
        return metrics

    def _save(self, started: float) -> None:
        positions = self.dist.gather_objects(self.stream.position)
        rngs = self.dist.gather_objects(capture_rng())
        elapsed = self._elapsed(started)
        # sharded tensors are gathered whole by every process; the main one writes them
        weights = self.dist.full_state(self.towers.clip.state_dict())
        optimizer = self.dist.full_state(self.optimizer.state_dict())
        average = self.dist.full_state(self.average.state_dict()) if self.average is not None else None
        if self.dist.is_main:
            state = {"step": self.step, "samples_seen": self.samples_seen, "elapsed_s": elapsed,
                     "optimizer": optimizer, "schedule": self.schedule.state_dict(),
                     "rng": rngs, "data_position": positions, "world_size": self.dist.world_size,
                     "config": asdict(self.config)}
            if self.distiller is not None:
                state["distill"] = self.distiller.state_dict()
            if average is not None:  # model.safetensors holds the averaged weights
                state["ema"] = average
                state["raw_weights"] = {k: weights[k] for k in average["shadow"]}
                weights = {**weights, **average["shadow"]}
            checkpoint.save_checkpoint(
                self.run_dir, step=self.step, state_dict=weights,
                model_info=models.model_info(self.towers.name, self.towers.clip), train_state=state,
                keep_last=self.config.keep_checkpoints)
        self.dist.barrier()
        # every rank knows the path rank 0 wrote, so every rank decides alike whether _finish saves again
        self.last_checkpoint = checkpoint.checkpoint_path(self.run_dir, self.step)

    def _finish(self, loss: float, started: float, stopped_by: str) -> TrainResult:
        if self.last_checkpoint != checkpoint.checkpoint_path(self.run_dir, self.step):
            self._save(started)
        evaluated_now = self.config.eval_every and self.step % self.config.eval_every == 0
        metrics = self.last_metrics if stopped_by or evaluated_now else self._evaluate()
        if self.dist.is_main:
            plot_curves(self.log.path, self.run_dir / CURVES_FILE)
            self._write_summary(loss, started, stopped_by, metrics)
        self.log.close()
        return TrainResult(run_dir=self.run_dir, step=self.step, checkpoint=self.last_checkpoint, loss=loss,
                           stopped_by=stopped_by, metrics=metrics, main_process=self.dist.is_main)

    def _write_summary(self, loss: float, started: float, stopped_by: str, metrics: dict[str, float]) -> None:
        summary = {"step": self.step, "loss": loss, "seconds": time.perf_counter() - started,
                   "samples_seen": self.samples_seen, "precision": self.precision,
                   "processes": self.dist.world_size, "sharded": self.sharded, "contrastive_batch": self.global_batch,
                   "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "skipped_samples": self.skipped.counts() if self.skipped else {},
                   "stopped_by": stopped_by, "metrics": metrics,
                   "checkpoint": str(self.last_checkpoint)}
        write_json_atomic(self.run_dir / "summary.json", summary)


def _set_runtime(config: TrainConfig, device: torch.device) -> None:
    if config.retain_memory and device.type == "cpu":
        keep_freed_memory()
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    seed_everything(config.seed)
