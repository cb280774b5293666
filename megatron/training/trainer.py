"""The pretraining loop on megatron-core: one stateful :class:`Trainer`.

Model, data and loss come from a :class:`TaskSpec` (GPT's is in :mod:`megatron.training.gpt`);
everything else is here: process groups, model chunks with DDP and mixed precision, the
megatron-core optimizer and forward-backward schedules (1F1B, interleaved), random-LTD kept
length and index plans, token accounting and the LayerToken LR, evaluation, NaN stop,
checkpoints and logging.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional

import torch

from megatron.curriculum import check_curriculum, curriculum_record
from megatron.curriculum.batch import apply_seqlen
from megatron.runtime import collectives
from megatron import checkpoint
from megatron.training import preemption
from megatron.training.config import PretrainConfig
from megatron.training.guards import LossGuard, TrainingDiverged, TrainingStopped, check_token_ids  # noqa: F401 (re-exported)
from megatron.training.lr_schedule import (
    StepWork,
    TokenCounters,
    add_step,
    build_scheduler,
    reached_budget,
    rewind_scheduler,
    run_length,
    schedule_lengths,
    step_work_fn,
)
from megatron.training.metrics import MetricsLogger, memory_summary, step_model_flops
from megatron.training.host_allocator import keep_freed_host_memory
from megatron.training.optimizer_tuning import use_fused_adam


@dataclass
class TaskSpec:
    """What differs between GPT and BERT pretraining."""

    build_model: Callable  # (cfg, vocab_size, tconfig, pre_process, post_process, vp_stage, ltd_layers) -> module
    build_datasets: Callable  # (cfg, tokenizer, [n_train, n_valid, n_test]) -> (train, valid, test)
    forward_step: Callable  # (batch, model, plan) -> (output_tensor, loss_func)


def _rank0_print(text: str) -> None:
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(text, flush=True)


class Trainer:
    def __init__(self, cfg: PretrainConfig, task: TaskSpec):
        from megatron.core import parallel_state as ps
        from megatron.core.distributed import finalize_model_grads
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        from megatron.data.tokenizers import build_tokenizer
        from megatron.runtime.device import init_distributed, set_seed
        from megatron.training.model_setup import (build_model_chunks, model_flags, padded_vocab_size, transformer_config,
                                                   virtual_pipeline_size)

        self.cfg, self.task = cfg, task
        m, p, t = cfg.model, cfg.parallel, cfg.training
        self.device_info = init_distributed(
            p.tensor_model_parallel_size,
            p.pipeline_model_parallel_size,
            virtual_pipeline_model_parallel_size=virtual_pipeline_size(m, p),
            force_cpu=p.cpu,
            timeout_minutes=cfg.fault.distributed_timeout_minutes,
        )
        self.device = self.device_info.device
        if not self.device_info.use_gpu:
            keep_freed_host_memory()  # no page faults on the large per-micro-batch buffers
        set_seed(t.seed)
        self.dp_size = ps.get_data_parallel_world_size()
        self.dp_rank = ps.get_data_parallel_rank()
        self.num_microbatches = t.global_batch_size // (t.micro_batch_size * self.dp_size)
        self.is_writer = ps.is_pipeline_last_stage(ignore_virtual=True) and ps.get_tensor_model_parallel_rank() == 0 and self.dp_rank == 0

        self.tokenizer = build_tokenizer(cfg.tokenizer)
        self.vocab_size = padded_vocab_size(self.tokenizer.vocab_size, m.make_vocab_size_divisible_by, p.tensor_model_parallel_size)
        if cfg.checkpoint.load:  # keep the checkpoint's padding when only the TP size changed it
            self.vocab_size = checkpoint.resume_vocab_size(cfg.checkpoint.load, self.tokenizer.vocab_size,
                                                           m.make_vocab_size_divisible_by, p.tensor_model_parallel_size)
        self.tconfig = transformer_config(m, p, cfg.precision, t, use_gpu=self.device_info.use_gpu)
        ltd = cfg.random_ltd
        self.ltd_layers: Optional[List[int]] = ltd.resolve_layers(m.num_layers) if ltd.enabled else None
        self.num_ltd_layers = len(self.ltd_layers or [])

        def provider(pre_process, post_process, vp_stage):
            return task.build_model(cfg, self.vocab_size, self.tconfig, pre_process, post_process, vp_stage, self.ltd_layers)

        self.models = build_model_chunks(provider, self.tconfig, self.device, use_distributed_optimizer=p.use_distributed_optimizer,
                                         overlap_grad_reduce=p.overlap_grad_reduce)
        if t.compile:
            from megatron.models.compile import compile_layers, compile_notice

            compile_layers(self.models, t.compile_mode or "default")
            _rank0_print(compile_notice(t.compile_mode or "default", self.device_info.use_gpu))
        opt_cfg = OptimizerConfig(
            optimizer=t.optimizer,
            lr=cfg.lr.lr,
            min_lr=cfg.lr.min_lr,
            weight_decay=t.weight_decay,
            adam_beta1=t.adam_beta1,
            adam_beta2=t.adam_beta2,
            adam_eps=t.adam_eps,
            sgd_momentum=t.sgd_momentum,
            clip_grad=t.clip_grad,
            bf16=cfg.precision.bf16,
            fp16=cfg.precision.fp16,
            params_dtype=self.tconfig.params_dtype,
            loss_scale=cfg.precision.loss_scale,
            initial_loss_scale=cfg.precision.initial_loss_scale,
            min_loss_scale=cfg.precision.min_loss_scale,
            loss_scale_window=cfg.precision.loss_scale_window,
            hysteresis=cfg.precision.hysteresis,
            use_distributed_optimizer=p.use_distributed_optimizer,
        )
        self.optimizer = get_megatron_optimizer(opt_cfg, self.models)
        use_fused_adam(self.optimizer)  # torch's fused AdamW where megatron-core fell back to the loop
        # The exact run (the kept length is a pure function of the step): its last iteration and its
        # work in every unit, so the default decay ends at --min-lr on the run's last step.
        self.step_work, _ = step_work_fn(cfg)
        self.run_length = run_length(cfg)
        warmup, decay = schedule_lengths(cfg, self.run_length)
        self.scheduler = build_scheduler(self.optimizer, cfg.lr, warmup, decay, t.weight_decay)
        self.lr_lengths = (warmup, decay)

        # Hooks megatron-core's schedules call (as Megatron-LM sets them).
        self.tconfig.finalize_model_grads_func = finalize_model_grads
        self.tconfig.grad_scale_func = self.optimizer.scale_loss
        self.tconfig.no_sync_func = [m_.no_sync for m_ in self.models] if len(self.models) > 1 else self.models[0].no_sync

        self.counters = TokenCounters()
        self.model_flags = model_flags(m)
        self.layout = {"tp": p.tensor_model_parallel_size, "pp": p.pipeline_model_parallel_size, "dp": self.dp_size,
                       "vpp": p.num_layers_per_virtual_pipeline_stage}
        # Datasets before the checkpoint: building them may draw from the global RNGs, and the
        # restored RNG state must be the last thing set before the first resumed step.
        self.train_ds, self.valid_ds, self.test_ds = task.build_datasets(cfg, self.tokenizer, self._num_samples())
        check_token_ids(self.train_ds, self.tokenizer.vocab_size, f"--data-path {cfg.data.data_path}, tokenizer "
                        f"{getattr(cfg.tokenizer, 'tokenizer_type', None)}")
        self.curriculum_order = self._curriculum_order()
        self.loaded_from: Optional[str] = None
        if cfg.checkpoint.load:
            self._load()
            use_fused_adam(self.optimizer)  # a load restores the saved param groups' flags
        self.logger = MetricsLogger(self.is_writer, cfg.logging.tensorboard_dir, cfg.logging.metrics_file,
                                    t.train_iters, not cfg.logging.no_progress, self.counters.iteration)
        self.last_valid_loss: Optional[float] = None
        self.last_save_iteration: Optional[int] = None
        f = cfg.fault
        self.guard = LossGuard(f.loss_spike_factor, f.loss_spike_window, f.max_consecutive_skipped_steps)
        self.stops = preemption.StopRequests(f.exit_signal_handler, f.exit_duration_in_mins, self.device)
        ck = cfg.checkpoint
        self.saver = checkpoint.Saver(ck.save, ck.keep_last_checkpoints, ck.async_save, say=self.logger.print,
                                      thread_count=2 if self.device_info.use_gpu else 1) if ck.save else None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict:
        return {"counters": self.counters.state_dict(), "curriculum": curriculum_record(self.cfg.curriculum)}

    def _metadata(self) -> Dict:
        cfg = self.cfg
        return {
            "model_type": cfg.model_type,
            "model_flags": self.model_flags,
            "tokenizer": dataclasses.asdict(cfg.tokenizer),
            "padded_vocab_size": self.vocab_size,
            "layout": self.layout,
            "distributed_optimizer": cfg.parallel.use_distributed_optimizer,
            "random_ltd": dataclasses.asdict(self._resolved_ltd()),
            "counters": self.counters.state_dict(),
            "lr_schedule_unit": cfg.lr.lr_schedule_unit,
            "curriculum": curriculum_record(cfg.curriculum),
        }

    def _resolved_ltd(self):
        """The random-LTD settings with the strata resolved: a change of strata (e.g. a resume
        that turns sequence parallelism on or off) changes the dropped tokens."""
        ltd = self.cfg.random_ltd
        return dataclasses.replace(ltd, strata=ltd.resolved_strata(self.cfg.parallel.sequence_parallel))

    def _load(self) -> None:
        cfg, ck = self.cfg, self.cfg.checkpoint
        # Only flags that change what the weights mean must match (dropout, init, seq length may change).
        must_match = {k: v for k, v in self.model_flags.items() if k in cfg.MODEL_FLAGS_THAT_MUST_MATCH}
        opts = checkpoint.ResumeOptions(
            load_optim=ck.load_optim, load_rng=ck.load_rng, finetune=ck.finetune,
            override_scheduler=ck.override_opt_param_scheduler, use_checkpoint_scheduler=ck.use_checkpoint_opt_param_scheduler,
            lr_schedule_unit=cfg.lr.lr_schedule_unit, random_ltd=self._resolved_ltd(), num_layers=cfg.model.num_layers,
            random_ltd_allow_change=ck.random_ltd_allow_change, all_flags=self.model_flags, padded_vocab_size=self.vocab_size)
        state = checkpoint.load(ck.load, self.models, self.optimizer, self.scheduler, must_match, self.layout,
                                                opts, say=_rank0_print)
        if state is None:
            return
        self.loaded_from = state["path"]
        if not ck.finetune:
            self.counters.load_state_dict(state["counters"])
            if state["iteration"] > 0:  # a seed checkpoint (iteration 0) has no data stream yet
                for diff in check_curriculum(state.get("curriculum"), cfg.curriculum):
                    _rank0_print(f"[checkpoint] curriculum changed (--curriculum-allow-change): {diff}")
        _rank0_print(f"[checkpoint] loaded {state['path']} (iteration {state['iteration']}"
                     f"{', weights only' if ck.finetune else ''})")

    def _kept_checkpoint(self) -> str:
        """What a stop leaves on disk, for its message."""
        committed = self.saver.committed if self.saver is not None else []  # an async save may be in flight
        newest = checkpoint.iter_dir(self.cfg.checkpoint.save, committed[-1]) if committed else self.loaded_from
        if newest is None:
            return "nothing was saved" + ("" if self.cfg.checkpoint.save else " (no --save)")
        return f"the newest checkpoint is {newest}, written before this iteration"

    def save(self) -> None:
        it = self.counters.iteration
        self.saver.save(it, self.models, self.optimizer, self.scheduler, self.state_dict(), self._metadata())
        self.last_save_iteration = it

    # ------------------------------------------------------------------ data
    def _num_samples(self) -> List[int]:
        t = self.cfg.training
        gbs = t.global_batch_size
        iters = self.run_length.iterations
        # Every evaluation reads the same first --eval-iters batches (comparable curves).
        return [iters * gbs, t.eval_iters * gbs, t.eval_iters * gbs]

    def _iterators(self, dataset, consumed_samples: int) -> List[Iterator]:
        from megatron.data.loader import build_data_loader

        n = len(self.models)
        if dataset is self.train_ds and self.curriculum_order is not None:
            return [iter(self._curriculum_loader(consumed_samples)) for _ in range(n)]
        return [
            iter(build_data_loader(dataset, self.cfg.training.micro_batch_size, consumed_samples, self.dp_rank, self.dp_size,
                                   num_workers=self.cfg.data.num_workers))
            for _ in range(n)
        ]

    def _curriculum_order(self):
        """Training samples, easiest first, for a sample-selecting curriculum (None otherwise)."""
        cur = self.cfg.curriculum
        if not cur.samples:
            return None
        from megatron.curriculum.metrics import dataset_sample_values, load_sequence_values
        from megatron.curriculum.sampler import check_pool, easiest_first
        from megatron.curriculum.schedule import difficulty, pool_size

        values = dataset_sample_values(self.train_ds, lambda low: load_sequence_values(low, cur.metric, cur.difficulty_file))
        s = self.cfg.model.seq_length
        # Starvation is a start-up error (the smallest pool is step 0's: the pacing never decreases).
        check_pool(pool_size(difficulty(0, cur, s), len(values), cur.full_difficulty(s)), self.cfg.training.global_batch_size,
                   len(values))
        return easiest_first(values)

    def _curriculum_loader(self, consumed_samples: int):
        """The train loader of a sample-selecting curriculum: each global batch drawn under the
        step's limit (megatron.curriculum.sampler); a pure function of the step, so a resume needs
        only consumed_samples."""
        from megatron.curriculum.sampler import CurriculumSampler
        from megatron.curriculum.schedule import difficulty, pool_size
        from megatron.data.loader import collate_samples

        cur, t, s = self.cfg.curriculum, self.cfg.training, self.cfg.model.seq_length
        n, full = len(self.curriculum_order), cur.full_difficulty(s)
        sampler = CurriculumSampler(self.curriculum_order, lambda step: pool_size(difficulty(step, cur, s), n, full),
                                    cur.constant_from(), t.global_batch_size, t.micro_batch_size, self.dp_rank, self.dp_size,
                                    cur.seed, start_step=consumed_samples // t.global_batch_size)
        return torch.utils.data.DataLoader(self.train_ds, batch_sampler=sampler, num_workers=self.cfg.data.num_workers,
                                           collate_fn=collate_samples, persistent_workers=self.cfg.data.num_workers > 0,
                                           generator=torch.Generator().manual_seed(consumed_samples))

    # ------------------------------------------------------------------ one step
    def kept_length(self, iteration: int) -> int:
        """Random-LTD's kept length at ``iteration``, capped at the curriculum's row length."""
        return self.step_work(iteration).kept_length

    def _forward_step_fn(self, iteration: int, k: Optional[int], seq_length: Optional[int] = None):
        """The function megatron-core's schedule calls per micro-batch. The index plan is made here,
        from the micro-batch's global sample ids, and handed to the model with the call. With a
        sequence-length curriculum the micro-batch is first cut to ``seq_length`` (training only)."""
        from megatron.ltd.sampler import build_index_plan

        cfg = self.cfg
        s = seq_length or cfg.model.seq_length
        strata = cfg.random_ltd.resolved_strata(cfg.parallel.sequence_parallel)  # never the TP size

        def step(data_iterator, model):
            batch = {key: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for key, v in next(data_iterator).items()}
            if seq_length is not None and cfg.curriculum.truncates:
                batch = apply_seqlen(batch, cfg.curriculum.metric, seq_length)
            plan = None
            if k is not None and self.ltd_layers:
                plan = build_index_plan(cfg.random_ltd.seed, iteration, batch["sample_id"], self.ltd_layers, k, s,
                                        device=self.device, strata=strata)
            return self.task.forward_step(batch, model, plan)

        return step

    def _run_schedule(self, data_iterators, forward_step, forward_only: bool, num_microbatches: int,
                      work: Optional[StepWork] = None):
        from megatron.core.pipeline_parallel import get_forward_backward_func

        t, m = self.cfg.training, self.cfg.model
        # The pipeline's activation shapes follow the step's rows (curriculum length and rows per sample).
        seq_length = work.seq_length if work is not None else m.seq_length
        rows_per_sample = work.rows // work.samples if work is not None else 1
        return get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=data_iterators if len(self.models) > 1 else data_iterators[0],
            model=self.models,
            num_microbatches=num_microbatches,
            seq_length=seq_length,
            micro_batch_size=t.micro_batch_size * rows_per_sample,
            forward_only=forward_only,
        )

    def _reduce_loss(self, losses: List[Dict]) -> float:
        """Mean loss over the global batch, identical on every rank (for logging and the NaN stop)."""
        from megatron.core import parallel_state as ps

        key = next(iter(losses[0])) if losses else None
        local = torch.stack([d[key].float() for d in losses]).mean() if losses else torch.zeros((), device=self.device)
        weight = 1.0 if losses and ps.get_tensor_model_parallel_rank() == 0 else 0.0
        buf = torch.tensor([float(local) * weight, weight], dtype=torch.float64, device=self.device)
        collectives.all_reduce(buf)
        return float(buf[0] / buf[1]) if buf[1] > 0 else float("nan")

    def _reduce_all_keys(self, losses: List[Dict]) -> Dict[str, float]:
        """Every reported loss term (e.g. BERT's lm and sop losses), averaged over the data-parallel
        ranks of the last stage. Only last-stage ranks hold losses, and only they take part."""
        from megatron.core import parallel_state as ps

        if not losses:
            return {}
        keys = list(losses[0])
        local = torch.stack([torch.stack([d[k].float() for d in losses]).mean() for k in keys]).to(torch.float64)
        collectives.all_reduce(local, group=ps.get_data_parallel_group())
        local /= ps.get_data_parallel_world_size()
        return {k.replace(" ", "_"): float(v) for k, v in zip(keys, local)}

    def train_step(self, data_iterators) -> Dict[str, float]:
        it = self.counters.iteration
        work = self.step_work(it)
        k = work.kept_length
        # Advance the LR schedule by this step's own work before the update (no one-step lag); a
        # skipped update (fp16 overflow) takes it back below, so only applied updates move the LR.
        amount = work.amount(self.cfg.lr.lr_schedule_unit)
        self.scheduler.step(amount)
        for model in self.models:
            model.zero_grad_buffer()
        self.optimizer.zero_grad()
        losses = self._run_schedule(data_iterators, self._forward_step_fn(it, k, work.seq_length), False, self.num_microbatches,
                                    work)
        loss = self._reduce_loss(losses)
        terms = self._reduce_all_keys(losses) if len(losses) and len(losses[0]) > 1 else {}
        self.guard.check_loss(loss, it + 1, self._kept_checkpoint())
        ok, grad_norm, _ = self.optimizer.step()
        if not ok:
            rewind_scheduler(self.scheduler, amount)
        self.guard.after_step(ok, it + 1, float(self.optimizer.get_loss_scale()) if self.cfg.precision.fp16 else None)
        add_step(self.counters, work)  # the counters count computed work, applied or not (docs/random_ltd.md)
        lr = self.optimizer.param_groups[0]["lr"]
        return {"loss": loss, "lr": lr, "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
                "kept_length": k, "skipped": 0.0 if ok else 1.0, "step_flops": self._step_flops(work),
                "raw_tokens": work.raw_tokens, "seq_length": work.seq_length,
                "loss_scale": float(self.optimizer.get_loss_scale()) if self.cfg.precision.fp16 else None,
                "terms": terms}

    def _step_flops(self, work: StepWork) -> float:
        m, tc = self.cfg.model, self.tconfig
        return step_model_flops(work.rows, work.seq_length, work.kept_length, m.num_layers, self.num_ltd_layers,
                                m.hidden_size, tc.ffn_hidden_size, tc.kv_channels, tc.num_attention_heads,
                                tc.num_query_groups or tc.num_attention_heads, m.swiglu, self.vocab_size)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, dataset=None, iters: Optional[int] = None) -> Optional[float]:
        """Mean validation loss over the first ``--eval-iters`` global batches (the same batches
        each time, so curves are comparable), every layer at full length."""
        dataset = dataset if dataset is not None else self.valid_ds
        iters = self.cfg.training.eval_iters if iters is None else iters
        if dataset is None or iters == 0:
            return None
        for model in self.models:
            model.eval()
        iterators = self._iterators(dataset, 0)
        losses = []
        with torch.no_grad():
            for _ in range(iters):
                out = self._run_schedule(iterators, self._forward_step_fn(self.counters.iteration, None), True, self.num_microbatches)
                losses.append(self._reduce_loss(out))
        for model in self.models:
            model.train()
        return sum(losses) / len(losses)

    # ------------------------------------------------------------------ loop
    def train(self) -> Dict[str, float]:
        cfg, t = self.cfg, self.cfg.training
        for model in self.models:
            model.train()
        iterators = self._iterators(self.train_ds, self.counters.samples)
        start_it = self.counters.iteration
        self._print_header()
        log_t0, log_tokens, log_flops, log_iters, log_skipped = time.time(), 0, 0.0, 0, 0
        run_t0 = time.time()
        last: Dict[str, float] = {}
        stop_reason = reached_budget(self.counters, t)
        preempted = None
        while stop_reason is None:
            preemption.inject_faults(self.counters.iteration + 1)
            try:
                last = self.train_step(iterators)
            except Exception as e:  # name the step when a collective times out or loses a peer
                if preemption.is_collective_failure(e):
                    raise preemption.CollectiveFailed(preemption.describe_collective_failure(
                        e, self.counters.iteration + 1, cfg.fault.distributed_timeout_minutes)) from e
                raise
            it = self.counters.iteration
            checkpoint.maybe_crash("iteration", it)  # fault injection for the resume tests
            if self.saver is not None:
                self.saver.poll()  # commit an asynchronous save whose write has finished
            log_iters += 1
            log_skipped += int(last["skipped"])
            log_tokens += last["raw_tokens"]
            log_flops += last["step_flops"]
            self.logger.advance()
            if it % cfg.logging.log_interval == 0:
                elapsed = max(time.time() - log_t0, 1e-9)
                world = torch.distributed.get_world_size()
                values = {
                    "loss": last["loss"], "lr": last["lr"], "grad_norm": last["grad_norm"], "kept_length": last["kept_length"],
                    "seq_length": last["seq_length"],
                    "tokens_per_s": log_tokens / elapsed, "tflops_per_device": log_flops / elapsed / world / 1e12,
                    "s_per_iter": elapsed / log_iters, "skipped_steps": log_skipped,
                }
                if last["loss_scale"] is not None:
                    values["loss_scale"] = last["loss_scale"]
                values.update(last["terms"])  # the separate loss terms, when the task reports several
                self._log_line(it, values, elapsed / log_iters)
                self.logger.record("train", it, values, self._x_axes(time.time() - run_t0))
                log_t0, log_tokens, log_flops, log_iters, log_skipped = time.time(), 0, 0.0, 0, 0
            if it % t.eval_interval == 0:
                pause_t0 = time.time()
                self._eval_and_log(it, pause_t0 - run_t0)
                log_t0 += time.time() - pause_t0  # evaluation is not the next interval's training time
            stop_reason = reached_budget(self.counters, t)
            if cfg.checkpoint.save and cfg.checkpoint.save_interval and it % cfg.checkpoint.save_interval == 0:
                pause_t0 = time.time()
                self.save()
                log_t0 += time.time() - pause_t0  # nor is a save (the save line reports its own time)
            if t.exit_interval and it % t.exit_interval == 0 and stop_reason is None:
                stop_reason = f"--exit-interval {t.exit_interval}"
                break
            preempted = self.stops.agreed_stop() if stop_reason is None else None
            if preempted:
                stop_reason = preempted
                break
        if preempted and not cfg.checkpoint.save:
            self.logger.print(f"[exit] stopping for {preempted}, but there is no --save: nothing is saved")
        if not preempted and self.counters.iteration > start_it and self.counters.iteration % t.eval_interval != 0:
            self._eval_and_log(self.counters.iteration, time.time() - run_t0)
        if cfg.checkpoint.save and self.last_save_iteration != self.counters.iteration and self.counters.iteration > start_it:
            self.save()
        if self.saver is not None:
            self.saver.wait()  # the run ends with every checkpoint committed
        wall = time.time() - run_t0
        summary = {
            "iterations": self.counters.iteration, "samples": self.counters.samples,
            "raw_tokens": self.counters.raw_tokens, "layer_tokens": self.counters.layer_tokens,
            "layer_averaged_tokens": self.counters.layer_averaged_tokens, "wall_s": wall,
            "final_train_loss": last.get("loss"), "final_valid_loss": self.last_valid_loss, "stopped_by": stop_reason,
        }
        self.logger.print(
            f"[done] stopped by {stop_reason} at iteration {summary['iterations']} | samples {summary['samples']:,} | "
            f"raw tokens {summary['raw_tokens']:,} | layer-tokens {summary['layer_tokens']:,} | wall {wall:.1f}s | "
            f"final train loss {summary['final_train_loss'] if summary['final_train_loss'] is None else round(summary['final_train_loss'], 4)} | "
            f"valid loss {summary['final_valid_loss'] if summary['final_valid_loss'] is None else round(summary['final_valid_loss'], 4)}"
        )
        self.logger.record("summary", self.counters.iteration, {k: v for k, v in summary.items() if isinstance(v, (int, float))})
        return summary

    def _x_axes(self, wall: float) -> Dict[str, float]:
        c = self.counters
        return {"samples": c.samples, "raw_tokens": c.raw_tokens, "layer_tokens": c.layer_tokens,
                "layer_averaged_tokens": c.layer_averaged_tokens, "wall_s": round(wall, 3)}

    def _eval_and_log(self, it: int, wall: float) -> None:
        loss = self.evaluate()
        if loss is None:
            return
        self.last_valid_loss = loss
        ppl = math.exp(min(loss, 50.0))
        self.logger.print(f"[valid] iteration {it:>7} | loss {loss:.4f} | ppl {ppl:.2f} | layer-tokens {self.counters.layer_tokens:,}")
        self.logger.record("valid", it, {"loss": loss, "ppl": ppl}, self._x_axes(wall))

    def _log_line(self, it: int, v: Dict[str, float], s_per_iter: float) -> None:
        c = self.counters
        self.logger.print(
            f"iteration {it:>7} | loss {v['loss']:.4f} | lr {v['lr']:.3e} | kept {int(v['kept_length'])}/{int(v['seq_length'])} | "
            f"grad norm {v['grad_norm']:.3f} | tokens {c.raw_tokens:,} | layer-tokens {c.layer_tokens:,} | "
            f"{v['tokens_per_s']:,.0f} tok/s | {v['tflops_per_device']:.3f} TFLOP/s/dev | {s_per_iter * 1000:.0f} ms/it | "
            f"{memory_summary(self.device)}"
            + (f" | loss scale {v['loss_scale']:.0f}" if "loss_scale" in v else "")
            + (f" | {v['skipped_steps']} steps skipped (fp16 overflow)" if v.get("skipped_steps") else "")
            + "".join(f" | {k.replace('_', ' ')} {x:.4f}" for k, x in v.items() if k.endswith("_loss"))
        )

    def _print_header(self) -> None:
        cfg = self.cfg
        n_params = sum(p.numel() for m in self.models for p in m.parameters())
        r = cfg.random_ltd
        kept = (f"kept {r.constant_k} at every step" if r.constant_k is not None else
                f"kept {self.kept_length(0)} -> {r.resolved_max_seq(cfg.model.seq_length)} over {r.require_steps} steps")
        ltd = (f"random-LTD on layers {self.ltd_layers}, {kept}, {r.resolved_strata(cfg.parallel.sequence_parallel)} strata"
               if self.ltd_layers else "random-LTD off")
        self.logger.print(
            f"[setup] {cfg.model_type.upper()} {cfg.model.num_layers} layers x {cfg.model.hidden_size} hidden | "
            f"{n_params:,} params on this rank | device {self.device_info.name} ({self.device_info.backend}) | "
            f"TP {self.layout['tp']} PP {self.layout['pp']} DP {self.layout['dp']} | global batch {cfg.training.global_batch_size} "
            f"= {self.num_microbatches} micro-batches x {cfg.training.micro_batch_size} x DP | {ltd} | {self._curriculum_summary()} | "
            f"LR unit {cfg.lr.lr_schedule_unit} (warmup {self.scheduler.lr_warmup_steps:,}, decay {self.scheduler.lr_decay_steps:,}, "
            f"lr {self.scheduler.max_lr:g} -> {self.scheduler.min_lr:g}{self._schedule_source()})"
        )

    def _curriculum_summary(self) -> str:
        cur, s = self.cfg.curriculum, self.cfg.model.seq_length
        if not cur.enabled:
            return "curriculum off"
        from megatron.curriculum.schedule import difficulty

        unit = "tokens" if cur.truncates else "% easiest samples"
        shape = (f"root degree {cur.root_degree}, " if cur.schedule == "fixed_root" else "")
        return (f"curriculum {cur.metric} {cur.schedule} ({shape}{difficulty(0, cur, s)} -> {cur.resolved_max(s)} {unit} "
                f"by {cur.step_increment} until step {cur.constant_from()}, seed {cur.seed})")

    def _schedule_source(self) -> str:
        ck = self.cfg.checkpoint
        if self.loaded_from is None or ck.finetune:
            return ""
        return ", from the checkpoint" if ck.use_checkpoint_opt_param_scheduler else ""

    def close(self) -> None:
        if self.saver is not None:
            self.saver.close()
        self.stops.close()
        self.logger.close()


def pretrain(cfg: PretrainConfig, task: TaskSpec) -> Dict[str, float]:
    """Build the trainer, train, and clean up; the entry scripts call only this."""
    from megatron.runtime.device import destroy_distributed

    trainer = Trainer(cfg, task)
    try:
        return trainer.train()
    finally:
        trainer.close()
        destroy_distributed()
