"""Resuming: which checkpoint ``--load`` means, reading it with every fault named, falling back to
an older checkpoint when one is damaged, and refusing a resume that would silently change the run.

``--load`` takes either a save directory or one ``iter_NNNNNNN`` directory inside it:

- a save directory: the tracker's iteration; when the tracker is missing or garbage, the newest
  complete checkpoint (said so). A damaged checkpoint (a file missing, empty, truncated or
  unreadable) is skipped for the next older complete one (said so). A directory holding no
  complete checkpoint starts from scratch; nothing is ever started from scratch over one.
- an iteration directory: exactly that checkpoint, or an error naming what is wrong with it.

Every rank reads its files first and the ranks agree (one ``all_gather_object``) before any state
is changed, so a file that only one rank reads cannot leave the ranks on different checkpoints.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch

from megatron.runtime import collectives
from megatron.training.checkpointing import (
    TRACKER,
    CheckpointDamaged,
    CheckpointError,
    complete_iterations,
    iter_dir,
    rank_dir_name,
    read_metadata,
    read_torch_file,
    set_rng_state,
    unwrap,
    verify_files,
)

_ITER_RE = re.compile(r"^iter_(\d+)(\.partial)?$")


@dataclass
class LoadPlan:
    root: str
    candidates: List[int]  # newest first; empty: start from scratch
    explicit: bool  # one iteration directory was named: no fallback
    notes: List[str] = field(default_factory=list)


def plan_load(load: str) -> LoadPlan:
    """Resolve ``--load`` into the checkpoints to try, newest first, and what to tell the user."""
    load = os.path.normpath(load)
    match = _ITER_RE.match(os.path.basename(load))
    if match:
        root, iteration = os.path.dirname(load) or ".", int(match.group(1))
        done = sorted(complete_iterations(root))
        if match.group(2):
            raise CheckpointError(f"--load {load} is a save that did not finish (a .partial directory); "
                                  f"load {root} (its newest complete checkpoint) or one of {[iter_dir(root, i) for i in done[-3:]]}")
        if iteration not in done:
            raise CheckpointError(f"--load {load} is not a complete checkpoint (no metadata.json); complete ones in {root}: "
                                  f"{done or 'none'}")
        return LoadPlan(root, [iteration], explicit=True)

    done = sorted(complete_iterations(load), reverse=True)
    tracker = os.path.join(load, TRACKER)
    if not os.path.isfile(tracker):
        if not done:
            leftovers = [n for n in os.listdir(load) if n.startswith("iter_")]
            extra = f" (ignoring unfinished saves: {', '.join(sorted(leftovers))})" if leftovers else ""
            return LoadPlan(load, [], False, [f"[checkpoint] no checkpoint in {load} yet: starting from scratch{extra}"])
        return LoadPlan(load, done, False, [f"[checkpoint] {tracker} is missing: using the newest complete checkpoint, "
                                            f"{iter_dir(load, done[0])}"])
    text = open(tracker).read().strip()
    try:
        named = int(text)
    except ValueError:
        if not done:
            raise CheckpointError(f"{tracker} is garbage ({text[:40]!r}) and {load} holds no complete checkpoint: "
                                  f"delete the file to start from scratch, or point --load at another directory") from None
        return LoadPlan(load, done, False, [f"[checkpoint] {tracker} is garbage ({text[:40]!r}): using the newest "
                                            f"complete checkpoint, {iter_dir(load, done[0])}"])
    if named in done:
        # Only older ones are fallbacks: a complete directory newer than the tracker was never committed.
        return LoadPlan(load, [named] + [i for i in done if i < named], False)
    if not done:
        raise CheckpointError(f"{tracker} names iteration {named}, but {load} holds no complete checkpoint: "
                              f"delete the tracker to start from scratch, or point --load at another directory")
    return LoadPlan(load, done, False, [f"[checkpoint] {tracker} names {iter_dir(load, named)}, which is missing or incomplete: "
                                        f"using the newest complete checkpoint, {iter_dir(load, done[0])}"])


# ------------------------------------------------------------------------------ compatibility


def check_compatible(meta: Dict[str, Any], model_flags: Dict[str, Any], layout: Dict[str, int], use_dist_opt: bool,
                     all_flags: Optional[Dict[str, Any]] = None, padded_vocab_size: Optional[int] = None) -> bool:
    """Refuse a checkpoint whose model flags differ, naming each difference; True when the layout
    differs and the checkpoint has a layout-independent copy (refused, with the way out, when not)."""
    saved = meta.get("model_flags", {})
    all_flags = all_flags or model_flags
    diffs = []
    for k, v in model_flags.items():
        if k not in saved or saved[k] == v:
            continue
        if k == "max_position_embeddings" and "seq_length" in saved and saved["seq_length"] != all_flags.get("seq_length"):
            # Learned positions default to --seq-length: name the flag the user changed.
            diffs.append(f"--seq-length: checkpoint {saved['seq_length']!r}, this run {all_flags.get('seq_length')!r} "
                         f"(it sizes the learned position embeddings; to train shorter sequences pass "
                         f"--max-position-embeddings {saved[k]})")
        else:
            diffs.append(f"--{k.replace('_', '-')}: checkpoint {saved.get(k)!r}, this run {v!r}")
    saved_vocab = meta.get("padded_vocab_size")
    if padded_vocab_size is not None and saved_vocab is not None and saved_vocab != padded_vocab_size:
        tok = meta.get("tokenizer") or {}
        diffs.append(f"vocabulary (--vocab-size / tokenizer, padded): checkpoint {saved_vocab}, this run {padded_vocab_size}; "
                     f"resume with the checkpoint's tokenizer: --tokenizer-type {tok.get('tokenizer_type')}"
                     + "".join(f" --{k.replace('_', '-')} {v}" for k, v in tok.items()
                               if v is not None and k in ("vocab_size", "tokenizer_model", "vocab_file", "merge_file")))
    if diffs:
        raise CheckpointError("checkpoint model flags differ from this run:\n  " + "\n  ".join(diffs))
    saved_layout = meta.get("layout", {})
    for key, flag in (("tp", "--tensor-model-parallel-size"), ("pp", "--pipeline-model-parallel-size"), ("vpp", "--num-layers-per-virtual-pipeline-stage")):
        if saved_layout.get(key) != layout.get(key):
            if meta.get("resharding"):
                return True
            raise CheckpointError(
                f"checkpoint was saved with {flag} {saved_layout.get(key)}, this run uses {layout.get(key)}. "
                "Resume with the saved layout, or convert it first: "
                "tools/convert_checkpoint.py merges a checkpoint to TP=1/PP=1 (weights only; add --finetune or --no-load-optim)."
            )
    if use_dist_opt and saved_layout.get("dp") != layout.get("dp") and meta.get("distributed_optimizer"):
        if meta.get("resharding"):
            return True
        raise CheckpointError(
            f"distributed-optimizer state was saved with data-parallel size {saved_layout.get('dp')}, this run has "
            f"{layout.get('dp')}: resume with the same number of processes, or add --no-load-optim"
        )
    return False


_SCHEDULER_FLAGS = (("max_lr", "--lr"), ("min_lr", "--min-lr"), ("lr_warmup_steps", "--lr-warmup-*"),
                    ("lr_decay_steps", "--lr-decay-* / the training length"), ("lr_decay_style", "--lr-decay-style"),
                    ("start_wd", "--weight-decay"), ("end_wd", "--weight-decay"))


def scheduler_differences(scheduler, saved: Dict[str, Any]) -> List[str]:
    return [f"{flag}: checkpoint {saved[key]!r}, this run {getattr(scheduler, key)!r} ({key})"
            for key, flag in _SCHEDULER_FLAGS if key in saved and saved[key] != getattr(scheduler, key)]


def load_scheduler(scheduler, saved: Dict[str, Any], override: bool, use_checkpoint: bool, saved_unit: Optional[str],
                   unit: str) -> None:
    """Megatron-LM's rule: the schedule position always comes from the checkpoint; its shape
    (LR, warmup, decay) from this run's flags with ``--override-opt_param-scheduler``, from the
    checkpoint with ``--use-checkpoint-opt_param-scheduler``, and must agree when neither is given."""
    if saved_unit is not None and saved_unit != unit:
        raise CheckpointError(f"--lr-schedule-unit: checkpoint {saved_unit}, this run {unit}; the schedule position "
                              f"is counted in the unit it was saved with: resume with --lr-schedule-unit {saved_unit}")
    diffs = scheduler_differences(scheduler, saved)
    if diffs and not (override or use_checkpoint):
        raise CheckpointError(
            "the LR schedule in the checkpoint differs from this run's:\n  " + "\n  ".join(diffs)
            + "\nPass --override-opt_param-scheduler to use this run's values, or --use-checkpoint-opt_param-scheduler "
            "to keep the checkpoint's (the schedule position is kept either way)")
    scheduler.override_opt_param_scheduler = override
    scheduler.use_checkpoint_opt_param_scheduler = not override
    scheduler.load_state_dict(saved)


_LTD_FLAGS = (("seed", "--random-ltd-seed (default: --seed)"), ("layers", "--random-ltd-layers"),
              ("min_seq", "--random-ltd-min-seq"), ("max_seq", "--random-ltd-max-seq"),
              ("require_steps", "--random-ltd-require-steps"), ("seq_step", "--random-ltd-seq-step"),
              ("constant_k", "--random-ltd-constant-k"),
              ("strata", "--random-ltd-strata (default: 8 with --sequence-parallel, else 1)"))


def check_random_ltd(saved: Optional[Dict[str, Any]], current, num_layers: int, allow_change: bool) -> List[str]:
    """The random-LTD settings decide which tokens every later step drops: a change after a resume
    is refused (flags named) unless ``--random-ltd-allow-change``. Turning random-LTD on or off is
    an explicit choice and is allowed. Returns the differences (for the log)."""
    if not saved or not saved.get("enabled") or not current.enabled:
        return []
    diffs = []
    for key, flag in _LTD_FLAGS:
        old, new = saved.get(key), getattr(current, key)
        if key == "strata" and old is None:
            continue  # written before the strata were recorded
        if key == "layers":
            old = sorted(old) if old is not None else list(range(1, num_layers - 1))
            new = current.resolve_layers(num_layers)
        if old != new:
            diffs.append(f"{flag}: checkpoint {old!r}, this run {new!r}")
    if diffs and not allow_change:
        raise CheckpointError("the random-LTD settings differ from the checkpoint's, which changes the tokens every later "
                              "step drops:\n  " + "\n  ".join(diffs)
                              + "\nResume with the checkpoint's values, or pass --random-ltd-allow-change to change them")
    return diffs


# --------------------------------------------------------------------------------------- load


@dataclass
class ResumeOptions:
    load_optim: bool = True
    load_rng: bool = True
    finetune: bool = False
    distributed_optimizer: bool = False
    override_scheduler: bool = False
    use_checkpoint_scheduler: bool = False
    lr_schedule_unit: str = "iterations"
    random_ltd: Any = None
    num_layers: int = 0
    random_ltd_allow_change: bool = False
    all_flags: Optional[Dict[str, Any]] = None
    padded_vocab_size: Optional[int] = None


def _read_rank_files(d: str, meta: Dict[str, Any], opts: ResumeOptions, use_dist_opt: bool, reshard: bool) -> Dict[str, Any]:
    from megatron.core import parallel_state as ps

    verify_files(d, meta)
    if reshard:
        # Another layout: weights and optimizer state come from the layout-independent copy; the
        # counters and the schedule from any rank file (they are global); RNG states do not carry over.
        state = read_torch_file(os.path.join(d, rank_dir_name(0, 0), "model_optim_rng.pt"))
        return {"state": state, "distrib": None, "rng": None, "reshard": True,
                "rng_missing": "saved on another layout" if opts.load_rng and not opts.finetune else None}
    rank_dir = os.path.join(d, rank_dir_name(ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()))
    out: Dict[str, Any] = {"state": read_torch_file(os.path.join(rank_dir, "model_optim_rng.pt")), "distrib": None, "rng": None}
    if use_dist_opt and ps.get_data_parallel_rank() == 0:
        out["distrib"] = read_torch_file(os.path.join(rank_dir, "distrib_optim.pt"))
    if opts.load_rng and not opts.finetune:
        rng_path = os.path.join(d, "rng", f"rank_{torch.distributed.get_rank():05d}.pt")
        out["rng"] = read_torch_file(rng_path) if os.path.isfile(rng_path) else None
        out["rng_missing"] = None if os.path.isfile(rng_path) else f"{rng_path} is missing"
    return out


def _load_distributed_optimizer_state(optimizer, states) -> None:
    """megatron-core's ``load_parameter_state`` minus its own unguarded torch.load: the file was
    already read (and its errors named) on DP rank 0; the other ranks pass None."""
    inner = getattr(optimizer, "chained_optimizers", [optimizer])
    for idx, opt in enumerate(inner):
        if not hasattr(opt, "load_parameter_state_from_dp_zero"):
            continue
        # megatron-core 0.16.1 copies every per-param state entry from the file, which holds only
        # param/exp_avg/exp_avg_sq; torch's Adam (used without Apex/TE) also keeps "step" there.
        # Set it aside (load_state_dict has already restored it) and put it back afterwards, one
        # tensor per param: load_state_dict leaves one tensor shared by all params, which torch's
        # Adam would then advance once per param at every step (a wrong bias correction).
        steps = {p: st.pop("step") for p, st in opt.optimizer.state.items() if "step" in st}
        try:
            opt.load_parameter_state_from_dp_zero(states if len(inner) == 1 else (states[idx] if states else None))
        finally:
            for p, step in steps.items():
                opt.optimizer.state[p]["step"] = step.clone() if torch.is_tensor(step) else step


def _apply(files: Dict[str, Any], models, optimizer, scheduler, meta, opts: ResumeOptions, use_dist_opt: bool, path: str) -> None:
    state = files["state"]
    if files.get("reshard"):
        from megatron.training import resharding

        resharding.load(path, models, optimizer, int(meta.get("optimizer_step", 0)),
                        opts.load_optim and not opts.finetune and optimizer is not None)
    else:
        model_states = state["model"] if len(models) > 1 else [state["model"]]
        for m, sd in zip(models, model_states):
            unwrap(m).load_state_dict(sd, strict=True)
    if opts.finetune:
        return
    if opts.load_optim and optimizer is not None and not files.get("reshard"):
        if state.get("optimizer") is None:
            raise CheckpointError(f"{path} holds no optimizer state: add --no-load-optim")
        optimizer.load_state_dict(state["optimizer"])
        if use_dist_opt:
            # fp32 runs: the "main" params are the model's own leaf params, written in place.
            with torch.no_grad():
                _load_distributed_optimizer_state(optimizer, files["distrib"])
    # The schedule position belongs with the counters: restored with --no-load-optim too. A seed
    # checkpoint (iteration 0) has no position: the loading run's schedule applies unchanged.
    if scheduler is not None and state.get("scheduler") is not None and meta.get("iteration") != 0:
        load_scheduler(scheduler, state["scheduler"], opts.override_scheduler, opts.use_checkpoint_scheduler,
                       meta.get("lr_schedule_unit"), opts.lr_schedule_unit)
    if files.get("rng") is not None:
        set_rng_state(files["rng"])


def load_checkpoint(load: str, models: List[torch.nn.Module], optimizer, scheduler, model_flags: Dict[str, Any],
                    layout: Dict[str, int], opts: ResumeOptions, say: Callable[[str], None] = print) -> Optional[Dict[str, Any]]:
    """Load what ``--load`` names (see the module docstring); returns the checkpoint's trainer state
    with ``iteration`` and ``path`` added, or None to start from scratch. Collective."""
    plan = plan_load(load)
    for note in plan.notes:
        say(note)
    if not plan.candidates:
        return None
    use_dist_opt = opts.distributed_optimizer and optimizer is not None and opts.load_optim and not opts.finetune
    failures = []
    for iteration in plan.candidates:
        d = iter_dir(plan.root, iteration)
        files, error = None, None
        try:
            meta = read_metadata(plan.root, iteration)
            reshard = check_compatible(meta, model_flags, layout, use_dist_opt, opts.all_flags, opts.padded_vocab_size)
            # A seed checkpoint (iteration 0) holds weights only: read them the layout-independent way.
            reshard = reshard or (meta.get("iteration") == 0 and bool(meta.get("resharding")))
            if not opts.finetune:
                check_random_ltd(meta.get("random_ltd"), opts.random_ltd, opts.num_layers, opts.random_ltd_allow_change) \
                    if opts.random_ltd is not None else None
            files = _read_rank_files(d, meta, opts, use_dist_opt, reshard)
        except CheckpointDamaged as e:
            error = str(e)
        gathered = collectives.all_gather_object((error, files.get("rng_missing") if files else None))
        errors = [e for e, _ in gathered if e]
        if not errors:
            _apply(files, models, optimizer, scheduler, meta, opts, use_dist_opt, d)
            missing = [m for _, m in gathered if m]
            if missing:
                say(f"[checkpoint] no RNG state for {len(missing)} rank(s) ({missing[0]}): those ranks continue from "
                    "--seed, so dropout masks differ from an uninterrupted run")
            if files.get("reshard"):
                say(f"[checkpoint] {d} was saved on layout {meta.get('layout')}: resharded to {layout}")
            out = dict(files["state"].get("trainer") or {})
            out.update(iteration=iteration, path=d, fell_back=bool(failures))
            return out
        failures.append(f"{d}: {errors[0]}")
        if plan.explicit:
            raise CheckpointDamaged(f"cannot load {d}: {errors[0]}")
        older = [i for i in plan.candidates if i < iteration]
        say(f"[checkpoint] cannot load {d}: {errors[0]}"
            + (f"; falling back to {iter_dir(plan.root, older[0])}" if older else ""))
    raise CheckpointDamaged(f"no checkpoint under {plan.root} loads:\n  " + "\n  ".join(failures)
                            + "\nRestore the damaged files, or delete these directories to start from scratch")
