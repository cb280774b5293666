"""Resuming: which checkpoint ``--load`` means, reading it with every fault named, falling back to
an older checkpoint when one is damaged, and refusing a resume that would silently change the run.

``--load`` takes either a save directory or one ``iter_NNNNNNN`` directory inside it:

- a save directory: the tracker's iteration; when the tracker is missing or garbage, the newest
  complete checkpoint (said so). A damaged checkpoint (a file missing, empty, truncated or
  altered) is skipped for the next older complete one (said so). A directory holding no
  complete checkpoint starts from scratch; nothing is ever started from scratch over one.
- an iteration directory: exactly that checkpoint, or an error naming what is wrong with it.

Before any state changes, every file's size is checked on every rank and its CRC-32 on one rank
(files striped over the ranks), and the ranks agree (one ``all_gather_object``), so all ranks land
on the same checkpoint. The checkpoint is then read with megatron-core's ``dist_checkpointing``
on whatever layout this run has.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch

from megatron.checkpoint import files, state
from megatron.checkpoint.files import TRACKER, CheckpointDamaged, CheckpointError, complete_iterations, iter_dir
from megatron.runtime import collectives

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
            raise CheckpointError(f"--load {load} is not a complete checkpoint (no manifest.json); complete ones in {root}: "
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


def check_compatible(meta: Dict[str, Any], model_flags: Dict[str, Any], layout: Dict[str, int],
                     all_flags: Optional[Dict[str, Any]] = None, padded_vocab_size: Optional[int] = None) -> bool:
    """Refuse a checkpoint whose model flags differ, naming each difference; True when it was
    saved on another layout (it is resharded: TP, PP, virtual PP and DP may all change)."""
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
    tp = layout.get("tp", 1)
    if padded_vocab_size is not None and saved_vocab is not None and saved_vocab != padded_vocab_size and saved_vocab % tp:
        # The padding rows cannot be re-padded (they are part of every softmax): the TP size must fit.
        diffs.append(f"vocabulary: the checkpoint's padded vocabulary {saved_vocab} does not split evenly over "
                     f"--tensor-model-parallel-size {tp}; resume with a TP size that divides {saved_vocab}")
    elif padded_vocab_size is not None and saved_vocab is not None and saved_vocab != padded_vocab_size:
        tok = meta.get("tokenizer") or {}
        diffs.append(f"vocabulary (--vocab-size / tokenizer, padded): checkpoint {saved_vocab}, this run {padded_vocab_size}; "
                     f"resume with the checkpoint's tokenizer: --tokenizer-type {tok.get('tokenizer_type')}"
                     + "".join(f" --{k.replace('_', '-')} {v}" for k, v in tok.items()
                               if v is not None and k in ("vocab_size", "tokenizer_model", "vocab_file", "merge_file")))
    if diffs:
        raise CheckpointError("checkpoint model flags differ from this run:\n  " + "\n  ".join(diffs))
    saved_layout = meta.get("layout", {})
    return any(saved_layout.get(k) != layout.get(k) for k in ("tp", "pp", "dp", "vpp"))


def pads_vocabulary(padded: int, vocab_size: int, divisible_by: int) -> bool:
    """Whether ``padded`` is Megatron's padding of ``vocab_size`` at some TP size. Not only at the
    checkpoint's own TP: a run resumed from TP=2 on one process keeps 50432 and saves it at TP=1."""
    from megatron.training.model_setup import padded_vocab_size

    if padded < vocab_size or padded % divisible_by:
        return False
    n = padded // divisible_by
    return any(n % t == 0 and padded_vocab_size(vocab_size, divisible_by, t) == padded for t in range(1, n + 1))


def resume_vocab_size(load: str, vocab_size: int, divisible_by: int, tp: int) -> int:
    """The padded vocabulary a resumed run builds: the checkpoint's when it pads the same real
    vocabulary and this TP divides it, so the padding rows (part of every softmax) and their
    optimizer state carry over exactly (GPT-2's 50257 pads to 50304 at TP=1, 50432 at TP=2);
    otherwise this run's own padding (and a real difference is refused by the load)."""
    from megatron.training.model_setup import padded_vocab_size

    own = padded_vocab_size(vocab_size, divisible_by, tp)
    try:
        plan = plan_load(load)
        meta = files.read_manifest(plan.root, plan.candidates[0]) if plan.candidates else {}
    except CheckpointError:
        return own  # the load itself reports what is wrong
    saved = meta.get("padded_vocab_size")
    if saved is not None and saved % tp == 0 and pads_vocabulary(saved, vocab_size, divisible_by):
        return saved
    return own


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
    override_scheduler: bool = False
    use_checkpoint_scheduler: bool = False
    lr_schedule_unit: str = "iterations"
    random_ltd: Any = None
    num_layers: int = 0
    random_ltd_allow_change: bool = False
    all_flags: Optional[Dict[str, Any]] = None
    padded_vocab_size: Optional[int] = None


def verify(d: str, meta: Dict[str, Any]) -> None:
    """Collective: every file's size (all ranks, cheap) and CRC-32 (files striped over the ranks)
    against the manifest; raises CheckpointDamaged naming the first bad file, the same on all ranks."""
    listing = sorted((meta.get("files") or {}).items())
    rank, world = collectives.rank(), torch.distributed.get_world_size()
    error = None
    try:
        for i, (rel, expected) in enumerate(listing):
            files.check_file(d, rel, expected, content=(i % world == rank))
    except CheckpointDamaged as e:
        error = str(e)
    errors = [e for e in collectives.all_gather_object(error) if e]
    if errors:
        raise CheckpointDamaged(errors[0])


def _refuse_legacy(d: str) -> None:
    raise CheckpointError(
        f"{d} is in the retired per-rank format (mp_rank_*/model_optim_rng.pt): convert it once with "
        f"tools/convert_checkpoint.py --load {os.path.dirname(d)} --save NEW_DIR (weights only), then --load NEW_DIR "
        "with --finetune or --no-load-optim")


def _apply(d: str, models, optimizer, scheduler, meta, opts: ResumeOptions, layout: Dict[str, int]) -> Dict[str, Any]:
    weights_only = opts.finetune or not opts.load_optim or optimizer is None
    same_layout = state.saved_rng_layout(meta, layout)
    load_rng = opts.load_rng and not opts.finetune and same_layout and meta.get("iteration") != 0
    # A seed checkpoint (iteration 0) holds weights only.
    common = state.load(d, models, optimizer, load_optim=not weights_only and meta.get("iteration") != 0, load_rng=load_rng)
    if opts.finetune:
        return common
    # The schedule position belongs with the counters: restored with --no-load-optim too. A seed
    # checkpoint (iteration 0) has no position: the loading run's schedule applies unchanged.
    if scheduler is not None and common.get("scheduler") is not None and meta.get("iteration") != 0:
        load_scheduler(scheduler, common["scheduler"], opts.override_scheduler, opts.use_checkpoint_scheduler,
                       meta.get("lr_schedule_unit"), opts.lr_schedule_unit)
    return common


def check_optimizer_kind(d: str, meta: Dict[str, Any], optimizer, opts: ResumeOptions) -> None:
    """megatron-core 0.16.1 reads a distributed optimizer's state only into a distributed optimizer
    (and a plain one's only into a plain one): switching --use-distributed-optimizer with the
    optimizer state is refused before anything loads, naming the way out."""
    saved = meta.get("distributed_optimizer")
    if saved is None or optimizer is None or opts.finetune or not opts.load_optim or meta.get("iteration") == 0:
        return
    if not state.has_optimizer(d):
        return  # weights only (converted): the load names --no-load-optim itself
    this_run = state.uses_distributed_optimizer(optimizer)
    if bool(saved) != this_run:
        raise CheckpointError(
            f"--use-distributed-optimizer: the checkpoint was saved {'with' if saved else 'without'} it, this run is "
            f"{'with' if this_run else 'without'} it, and megatron-core cannot read one optimizer's state into the other; "
            f"resume {'with' if saved else 'without'} --use-distributed-optimizer, or add --no-load-optim to keep the "
            "weights and the LR schedule position and restart Adam's moments")


def _dropout_note(flags: Optional[Dict[str, Any]]) -> str:
    """Why a resumed run with dropout on another layout does not repeat the uninterrupted losses:
    the dropout masks come from per-TP-rank and per-stage RNG streams, which exist per layout."""
    on = {k: v for k, v in (flags or {}).items() if k in ("hidden_dropout", "attention_dropout") and v}
    if not on:
        return ""
    named = ", ".join("--" + k.replace("_", "-") + f" {v}" for k, v in sorted(on.items()))
    return (f"; with dropout on ({named}) the "
            "losses differ from an uninterrupted run on the saved layout (other masks, statistically the same run); "
            "resume on the saved layout to continue it exactly")


def load_checkpoint(load: str, models: List[torch.nn.Module], optimizer, scheduler, model_flags: Dict[str, Any],
                    layout: Dict[str, int], opts: ResumeOptions, say: Callable[[str], None] = print) -> Optional[Dict[str, Any]]:
    """Load what ``--load`` names (see the module docstring); returns the checkpoint's trainer state
    with ``iteration`` and ``path`` added, or None to start from scratch. Collective."""
    plan = plan_load(load)
    for note in plan.notes:
        say(note)
    if not plan.candidates:
        return None
    failures = []
    for iteration in plan.candidates:
        d = iter_dir(plan.root, iteration)
        try:
            meta = files.read_manifest(plan.root, iteration)
            if meta["format"] == "legacy":
                _refuse_legacy(d)
            reshard = check_compatible(meta, model_flags, layout, opts.all_flags, opts.padded_vocab_size)
            if not opts.finetune and opts.random_ltd is not None:
                check_random_ltd(meta.get("random_ltd"), opts.random_ltd, opts.num_layers, opts.random_ltd_allow_change)
            verify(d, meta)
            check_optimizer_kind(d, meta, optimizer, opts)
        except CheckpointDamaged as e:
            failures.append(f"{d}: {e}")
            if plan.explicit:
                raise CheckpointDamaged(f"cannot load {d}: {e}") from None
            older = [i for i in plan.candidates if i < iteration]
            say(f"[checkpoint] cannot load {d}: {e}" + (f"; falling back to {iter_dir(plan.root, older[0])}" if older else ""))
            continue
        common = _apply(d, models, optimizer, scheduler, meta, opts, layout)
        if reshard:
            say(f"[checkpoint] {d} was saved on layout {meta.get('layout')}: resharded to {layout}"
                + ("; RNG states do not carry over to another layout (the run continues from --seed)"
                   if opts.load_rng and not opts.finetune else "") + _dropout_note(opts.all_flags))
        out = dict(common.get("trainer") or {})
        out.update(iteration=iteration, path=d, fell_back=bool(failures))
        return out
    raise CheckpointDamaged(f"no checkpoint under {plan.root} loads:\n  " + "\n  ".join(failures)
                            + "\nRestore the damaged files, or delete these directories to start from scratch")
